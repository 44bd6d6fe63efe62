/**
 * Who makes a call, as the engine sees it: a name (a token's, or a client
 * certificate's subject) and roles. Roles are ranked: `run` includes `read`, `admin`
 * includes both; `read_all` is `read` with others' actions in full. Without
 * authentication every call is the anonymous caller, with every role.
 */
import type { RankedRole, Role } from "../roles.ts";

export type { RankedRole, Role };

export interface Caller {
  /** "" for the anonymous caller of a server without authentication. */
  readonly name: string;
  readonly roles: ReadonlySet<Role>;
}

/** read_all ranks as read: it includes read, and no more of what a method needs. */
const rank: Record<Role, number> = { read: 1, read_all: 1, run: 2, admin: 3 };

export const ANONYMOUS: Caller = Object.freeze({ name: "", roles: new Set<Role>(["read", "run", "admin", "read_all"]) });

/** True if one of the caller's roles is `role` or ranks above it. */
export function hasRole(caller: Caller, role: RankedRole): boolean {
  for (const r of caller.roles) if (rank[r] >= rank[role]) return true;
  return false;
}
