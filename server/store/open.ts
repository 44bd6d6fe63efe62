/** The store that the config's backend section asks for. */
import type { ResolvedConfig } from "../config/load.ts";
import { MemoryStore } from "./memory.ts";
import { PostgresStore } from "./postgres.ts";
import { SqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

export interface StoreHooks {
  /** How long each commit of action changes took: for metrics. */
  onCommit?: ((seconds: number) => void) | undefined;
  /** What went wrong in the background, for the log. */
  onWarning?: ((message: string, error: unknown) => void) | undefined;
  /** postgres: what the cluster did (a server gone, its actions ended). */
  onInfo?: ((message: string) => void) | undefined;
  /** postgres: this server lost its lease on the database: it must stop serving. */
  onLeaseLost?: ((message: string) => void) | undefined;
}

export async function openStore(backend: ResolvedConfig["backend"], hooks: StoreHooks = {}): Promise<Store> {
  const common = {
    keepRevisions: backend.keep_revisions,
    maxActions: backend.max_actions,
    maxActionAgeMs: backend.max_action_age_days * 24 * 3600 * 1000,
  };
  if (backend.kind === "memory") return new MemoryStore(common);
  if (backend.kind === "postgres") {
    return PostgresStore.open({
      ...common,
      url: backend.url!,
      poolSize: backend.pool_size,
      connectTimeoutMs: backend.connect_timeout * 1000,
      leaseMs: backend.lease_seconds * 1000,
      onCommit: hooks.onCommit,
      onWarning: hooks.onWarning,
      onInfo: hooks.onInfo,
      onLeaseLost: hooks.onLeaseLost,
    });
  }
  return new SqliteStore({
    ...common,
    path: backend.path,
    synchronous: backend.synchronous,
    maxSizeBytes: backend.max_size_mb === undefined ? undefined : backend.max_size_mb * 1024 * 1024,
    onCommit: hooks.onCommit,
  });
}
