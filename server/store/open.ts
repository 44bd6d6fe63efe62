/**
 * The backend that the config's backend section asks for: a store, and on PostgreSQL a
 * cluster too. The one place that assembles the PostgreSQL store and the cluster on the
 * access layer they share (pg/), so that neither knows the other.
 */
import { PostgresCluster } from "../cluster/postgres-cluster.ts";
import type { Cluster } from "../cluster/types.ts";
import type { ResolvedConfig } from "../config/load.ts";
import { MemoryStore } from "./memory.ts";
import { PgDatabase } from "./pg/database.ts";
import { openError } from "./pg/errors.ts";
import { PgWrites } from "./pg/writes.ts";
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
  /**
   * postgres: whether a process of this host is alive (a zombie counts as gone): a
   * cluster's server on this host whose process is gone is removed at once. Without it,
   * only by its lease lapsing.
   */
  processAlive?: ((pid: number) => boolean) | undefined;
}

export interface Backend {
  store: Store;
  /** Several servers share the store (postgres): the store's close() leaves the cluster too. */
  cluster?: Cluster | undefined;
}

export async function openBackend(backend: ResolvedConfig["backend"], hooks: StoreHooks = {}): Promise<Backend> {
  const common = {
    keepRevisions: backend.keep_revisions,
    maxActions: backend.max_actions,
    maxActionAgeMs: backend.max_action_age_days * 24 * 3600 * 1000,
  };
  if (backend.kind === "memory") return { store: new MemoryStore(common) };
  if (backend.kind === "postgres") {
    const db = await PgDatabase.open({
      url: backend.url!,
      poolSize: backend.pool_size,
      connectTimeoutMs: backend.connect_timeout * 1000,
      leaseMs: backend.lease_seconds * 1000,
      onWarning: hooks.onWarning,
    });
    try {
      const writes = new PgWrites(db, { keepRevisions: common.keepRevisions, onCommit: hooks.onCommit });
      const cluster = new PostgresCluster(db, writes, {
        alive: hooks.processAlive ?? (() => true),
        onWarning: hooks.onWarning,
        onInfo: hooks.onInfo,
      });
      const store = new PostgresStore(db, writes, common);
      await cluster.join();
      // What a server that crashed here left behind is ended (or queued again) before this one serves.
      await cluster.sweepNow();
      return { store, cluster };
    } catch (error) {
      await db.close();
      throw openError(error, db.where);
    }
  }
  return {
    store: new SqliteStore({
      ...common,
      path: backend.path,
      synchronous: backend.synchronous,
      maxSizeBytes: backend.max_size_mb === undefined ? undefined : backend.max_size_mb * 1024 * 1024,
      onCommit: hooks.onCommit,
    }),
  };
}
