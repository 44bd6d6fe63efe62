/**
 * The roles a caller may hold, ranked: `run` includes `read`, `admin` includes both. The
 * config grants them (tokens, certificates) and the engine checks them: both import them
 * from here.
 */
export const ROLES = ["read", "run", "admin"] as const;

export type Role = (typeof ROLES)[number];
