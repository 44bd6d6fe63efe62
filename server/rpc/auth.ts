/**
 * Who is calling, and may they: every RPC (ours and reflection's; health too unless
 * open_health) needs a bearer token (`authorization: Bearer <token>`) or, with mutual
 * TLS, a client certificate; the method needs a role. Tokens are compared by their
 * sha256 in constant time, against every configured token, so that neither a match nor
 * its position shows in the timing.
 *
 * read: Get/List/Watch/Wait, ListPlugins, reflection. run: CreateInstance, Fit, Predict,
 * CancelAction of one's own actions. admin: Add/Update/DeleteModel, anyone's cancel.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { CallContext } from "nice-grpc";
import type { TokenHash } from "../config/load.ts";
import { ANONYMOUS, type Caller, hasRole, type RankedRole, type Role } from "../engine/caller.ts";
import { PlinthError } from "../errors.ts";
import { PEER_SUBJECT } from "./tls.ts";

export interface AuthOptions {
  tokens: TokenHash[];
  /** Client certificates' roles by subject ("CN=alice" or "alice"). */
  certificates: { subject: string; roles: Role[] }[];
  /** grpc.health.v1 answers without a token. */
  openHealth: boolean;
}

/** The role a method needs; a method not listed needs admin. */
const needs: Record<string, RankedRole> = {
  "/plinth.v1.EngineService/ListModels": "read",
  "/plinth.v1.EngineService/GetModel": "read",
  "/plinth.v1.EngineService/ListPlugins": "read",
  "/plinth.v1.EngineService/CreateInstance": "run",
  "/plinth.v1.EngineService/Fit": "run",
  "/plinth.v1.EngineService/Predict": "run",
  "/plinth.v1.ActionService/GetAction": "read",
  "/plinth.v1.ActionService/ListActions": "read",
  "/plinth.v1.ActionService/WaitAction": "read",
  "/plinth.v1.ActionService/WatchAction": "read",
  // Another caller's action needs admin: the engine checks whose it is.
  "/plinth.v1.ActionService/CancelAction": "run",
  "/plinth.v1.StateService/GetState": "read",
  "/plinth.v1.StateService/WatchState": "read",
};

export function roleFor(path: string): RankedRole {
  if (path.startsWith("/grpc.reflection.") || path.startsWith("/grpc.health.")) return "read";
  return needs[path] ?? "admin";
}

const isHealth = (path: string) => path.startsWith("/grpc.health.");

export interface Authenticator {
  /** Whether calls need an identity at all. */
  readonly enabled: boolean;
  /** The caller a call's metadata shows, or why it shows none ("" when it shows nothing). */
  authenticate(metadata: CallContext["metadata"]): Caller | string;
  /** The caller a call's metadata shows; undefined when it shows none that is known. */
  identify(metadata: CallContext["metadata"]): Caller | undefined;
  /**
   * The caller a call of `path` with this metadata is made by; throws UNAUTHENTICATED or
   * PERMISSION_DENIED. `shown`: what authenticate said of this metadata, when already asked.
   */
  authorize(path: string, metadata: CallContext["metadata"], shown?: Caller | string): Caller;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

export function authenticator(options: AuthOptions | undefined, mutualTls: boolean): Authenticator {
  const tokens = (options?.tokens ?? []).map((t) => ({
    name: t.name,
    hash: Buffer.from(t.sha256, "hex"),
    roles: new Set(t.roles),
    expiresAt: t.expiresAt ?? Number.POSITIVE_INFINITY,
  }));
  const certificates = new Map((options?.certificates ?? []).map((c) => [c.subject.replace(/^CN=/, ""), new Set(c.roles)]));
  const enabled = tokens.length > 0 || certificates.size > 0 || mutualTls;
  const openHealth = options?.openHealth ?? true;

  /** The caller, or why there is none. */
  const authenticate = (metadata: CallContext["metadata"]): Caller | string => {
    const header = metadata.get("authorization");
    if (typeof header === "string" && header) {
      const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
      if (!token) return "the authorization header must be: Bearer <token>";
      const hash = sha256(token);
      let found: (typeof tokens)[number] | undefined;
      // Every token compared, whatever matched: the time taken says nothing.
      for (const t of tokens) if (timingSafeEqual(hash, t.hash) && !found) found = t;
      if (!found) return "the token is not one this server knows (authorization: Bearer <token>)";
      if (Date.now() > found.expiresAt) return `the token ${found.name} expired at ${new Date(found.expiresAt).toISOString()}`;
      return { name: found.name, roles: found.roles };
    }
    // Only a mutual-TLS connection's own certificate sets PEER_SUBJECT (tls.ts); without
    // TLS nothing strips what a client sends under that name, so it is not looked at.
    const subject = mutualTls ? metadata.get(PEER_SUBJECT) : undefined;
    if (typeof subject === "string" && subject) return { name: subject, roles: certificates.get(subject) ?? new Set() };
    return "";
  };
  const identify = (metadata: CallContext["metadata"]): Caller | undefined => {
    const caller = authenticate(metadata);
    return typeof caller === "string" ? undefined : caller;
  };

  const authorize = (path: string, metadata: CallContext["metadata"], shown?: Caller | string): Caller => {
    if (!enabled || (openHealth && isHealth(path))) return ANONYMOUS;
    const caller = shown ?? authenticate(metadata);
    if (typeof caller === "string") {
      throw new PlinthError(
        "unauthenticated",
        caller || `${path} needs a token: send the header authorization: Bearer <token>${mutualTls ? ", or a client certificate" : ""}`,
      );
    }
    const need = roleFor(path);
    if (!hasRole(caller, need)) {
      const has = [...caller.roles].join(", ") || "no role";
      throw new PlinthError("permission_denied", `${path} needs the ${need} role; ${caller.name} has ${has}`);
    }
    return caller;
  };

  return { enabled, authenticate, identify, authorize };
}
