/**
 * The roles a caller may hold. `read`, `run` and `admin` are ranked: `run` includes
 * `read`, `admin` includes both. `read_all` is `read` and every caller's actions in full
 * (server.auth.visibility), and grants nothing else: it goes beside `run` or alone. The
 * config grants them (tokens, certificates) and the engine checks them: both import them
 * from here.
 */
export const ROLES = ["read", "run", "admin", "read_all"] as const;

export type Role = (typeof ROLES)[number];

/** The roles a method can need: the ranked ones. */
export type RankedRole = Exclude<Role, "read_all">;
