/**
 * Several Plinth servers on one PostgreSQL database: membership, the change feed, work
 * claiming and cross-server cancel. PostgreSQL is the only coordinator.
 *
 * - Membership: each server has a row in plinth_servers that it renews (its lease). A
 *   server whose lease lapsed (killed, stalled, cut off) — or whose process is gone, on
 *   this host — is removed by any other: what it was running ends FAILED interrupted,
 *   what it had claimed but not started goes back to the queue. A server that finds its
 *   own row gone writes nothing more (every write checks it) and stops.
 * - The feed: every change carries a revision from one sequence, taken under one
 *   transaction lock, so revisions follow the commit order; NOTIFY says "something
 *   changed" and each server reads the changes after the last one it applied.
 * - Claims: a server with free children takes the oldest queued actions it can run,
 *   per model in order: one at a time, but the predicts of a model type that every
 *   server declaring it runs shared, which run at once up to each server's share;
 *   those on models its children hold first, for a while (plinth_claim, migration 5).
 */
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import pg from "pg";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { afterLoss } from "../engine/retry-policy.ts";
import { goneServerEnd, interruptedAction } from "../store/interrupted.ts";
import type { PgDatabase } from "../store/pg/database.ts";
import { revisionMadeBy } from "../store/pg/revision-made-by.ts";
import type { CommittedAction, PgWrites } from "../store/pg/writes.ts";
import { decodeAction, encodeAction, type MadeRow, type ModelRow, modelMeta, UNFINISHED_STATUSES } from "../store/records.ts";
import { describeHolder } from "../store/sqlite-lock.ts";
import type { ModelMeta, ModelRecord, StoredPayloads } from "../store/store.ts";
import type { Announced, ClaimedAction, ClaimScope, Cluster, ClusterEvents, FeedChange, ServerInfo } from "./types.ts";

export interface ClusterOptions {
  /** Whether a process of this host is alive (a zombie counts as gone): a server on this host whose process is gone is removed at once. */
  alive(pid: number): boolean;
  onWarning?: ((message: string, error: unknown) => void) | undefined;
  onInfo?: ((message: string) => void) | undefined;
}

interface ServerRow {
  server: string;
  host: string;
  pid: number;
  since: Date;
  expires: Date;
  address: string;
  plugins: string;
  lapsed: boolean;
}

const holderOf = (row: ServerRow) => describeHolder({ pid: row.pid, host: row.host, since: row.since.toISOString() });

/** How often a server renews its lease and looks for servers whose lease lapsed. */
export function tickMs(leaseMs: number): number {
  return Math.min(leaseMs / 3, 1000);
}

export class PostgresCluster implements Cluster {
  readonly server: string;
  readonly events = new EventEmitter<ClusterEvents>();
  readonly leaseLost: Promise<string>;
  readonly #leaseLost: (why: string) => void;
  readonly #db: PgDatabase;
  readonly #writes: PgWrites;
  readonly #o: ClusterOptions;
  readonly #leaseMs: number;
  readonly #host = hostname();
  #timer: ReturnType<typeof setInterval> | undefined;
  #listener: pg.Client | undefined;
  #closed = false;
  #lost = false;
  #ticks = 0;
  #sweeping = false;
  /**
   * Since when this server has reached the database without a break. After an outage it
   * waits a lease before removing lapsed servers: the others were cut off too, and
   * deserve the time to renew.
   */
  #reachableSince: number | undefined = performance.now();

  /** Shares the store's access to the database: its writes, and the lease they are fenced by (this server's row). */
  constructor(db: PgDatabase, writes: PgWrites, options: ClusterOptions) {
    this.#db = db;
    this.#writes = writes;
    this.#o = options;
    this.#leaseMs = db.leaseMs;
    this.server = db.server;
    this.events.setMaxListeners(0);
    let lose = (_why: string) => {};
    this.leaseLost = new Promise<string>((resolve) => (lose = resolve));
    this.#leaseLost = lose;
    // A write refused for a lapsed lease: a renewal keeps it if it is still there.
    db.events.on("fenced", () => void this.renew());
    writes.events.on("committed", (first, actions) => this.#committed(first, actions));
    // The row goes before the connections end: no other server waits out this one's lease.
    db.beforeClose(() => this.close());
  }

  /** Joins: this server's row, the notifications, the renewals. */
  async join(): Promise<void> {
    await this.#db.query(
      "INSERT INTO plinth_servers (server, host, pid, since, expires) VALUES ($1, $2, $3, now(), now() + $4 * interval '1 millisecond')",
      [this.server, this.#host, process.pid, this.#leaseMs],
    );
    await this.#listen();
    this.#timer = setInterval(() => void this.#tick(), tickMs(this.#leaseMs));
    this.#timer.unref();
  }

  /** Removes at once the servers already gone: a crash restart takes over its own leftovers. */
  async sweepNow(): Promise<void> {
    await this.#sweep(true);
  }

  get lost(): boolean {
    return this.#lost;
  }

  async #listen(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({ connectionString: this.#db.url });
    const retry = () => {
      if (this.#listener !== client) return;
      this.#listener = undefined;
      void client.end().catch(() => {});
      if (this.#closed) return;
      setTimeout(() => void this.#listen().catch(() => {}), 500).unref();
    };
    client.on("error", retry);
    client.on("end", retry);
    client.on("notification", (message) => {
      const payload = message.payload ?? "";
      if (payload.startsWith("c ")) {
        const [, server, first, last] = payload.split(" ");
        this.events.emit("changes", { server: server!, first: BigInt(first!), last: BigInt(last!) });
      } else if (payload === "c") this.events.emit("changes");
      else if (payload === "w") this.events.emit("work");
      else if (payload.startsWith("x")) {
        const { id, by } = JSON.parse(payload.slice(1)) as { id: string; by: string };
        this.events.emit("cancel", id, by);
      }
    });
    this.#listener = client;
    try {
      await client.connect();
      await client.query("LISTEN plinth");
    } catch (error) {
      this.#o.onWarning?.(`listening on ${this.#db.where} failed; retrying`, error);
      retry();
      return;
    }
    // Whatever happened while no one listened.
    this.events.emit("changes");
    this.events.emit("work");
  }

  async #tick(): Promise<void> {
    if (this.#closed || this.#lost) return;
    await this.renew();
    // A notification lost with a broken connection costs at most a tick.
    this.events.emit("changes");
    this.events.emit("work");
    await this.#sweep(++this.#ticks % 10 === 0);
  }

  /**
   * Extends the lease. It is this server's for as long as its row is there: after an
   * outage longer than the lease, a renewal that finds the row still there (no other
   * server removed it meanwhile) keeps serving; one that finds it gone has lost it.
   */
  async renew(): Promise<void> {
    if (this.#closed || this.#lost) return;
    try {
      const { rowCount } = await this.#db.query("UPDATE plinth_servers SET expires = now() + $2 * interval '1 millisecond' WHERE server = $1", [
        this.server,
        this.#leaseMs,
      ]);
      if ((rowCount ?? 0) === 0) this.#loseLease();
      this.#reachableSince ??= performance.now();
    } catch (error) {
      this.#reachableSince = undefined;
      if (!this.#closed) this.#o.onWarning?.(`renewing this server's lease on ${this.#db.where} failed; retrying`, error);
    }
  }

  #loseLease(): void {
    if (this.#lost) return;
    this.#lost = true;
    clearInterval(this.#timer);
    this.#leaseLost(
      `this server lost its lease on ${this.#db.where}: its lease lapsed (it stalled, or could not reach the database) and another server ended its actions; it writes nothing more and stops`,
    );
  }

  /**
   * Removes the servers gone (lease lapsed, or process gone on this host): ends what they
   * ran, queues again what they had claimed but not started. `orphans` also looks for
   * work no live server holds (left by a server removed meanwhile, or by an older Plinth).
   */
  async #sweep(orphans: boolean): Promise<void> {
    if (this.#sweeping || this.#closed || this.#lost) return;
    this.#sweeping = true;
    try {
      const { rows } = await this.#db.query<ServerRow>(
        "SELECT server, host, pid, since, expires, address, plugins, expires <= now() AS lapsed FROM plinth_servers WHERE server <> $1",
        [this.server],
      );
      const settled = this.#reachableSince !== undefined && performance.now() - this.#reachableSince >= this.#leaseMs;
      const gone = rows.filter((row) => (row.lapsed && settled) || (row.host === this.#host && !this.#o.alive(row.pid)));
      if (gone.length === 0 && !orphans) return;
      const ended = await this.#db.transaction(async (client) => {
        const why = new Map<string, string>();
        for (const row of gone) {
          // Lapsed still (not renewed meanwhile), or its process is gone.
          const dead = row.host === this.#host && !this.#o.alive(row.pid);
          const removed = await client.query("DELETE FROM plinth_servers WHERE server = $1 AND (expires <= now() OR $2)", [row.server, dead]);
          if ((removed.rowCount ?? 0) === 0) continue;
          why.set(
            row.server,
            row.lapsed
              ? `${holderOf(row)} stopped responding (its lease lapsed)`
              : `${holderOf(row)} is gone (it exited without giving back its lease)`,
          );
        }
        if (why.size === 0 && !orphans) return [];
        // Claimed by a server that is no longer there, and unfinished actions nobody holds.
        const { rows: left } = await client.query<{ id: string; owner: string | null; json: string; queued: boolean }>(
          `SELECT a.id, r.owner, a.json, r.action_id IS NOT NULL AS queued FROM actions a
           LEFT JOIN action_requests r ON r.action_id = a.id
           WHERE a.status = ANY ($1::integer[])
             AND (r.action_id IS NULL OR (r.owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM plinth_servers s WHERE s.server = r.owner)))
           ORDER BY a.id`,
          [UNFINISHED_STATUSES],
        );
        const ids: string[] = [];
        for (const row of left) {
          const action = decodeAction(row.json);
          if (row.queued && action.status === ActionStatus.QUEUED && !action.startTime) {
            await client.query("UPDATE action_requests SET owner = NULL WHERE action_id = $1", [row.id]);
            continue;
          }
          const message = (row.owner && why.get(row.owner)) ?? "the server running it is gone (its lease lapsed before this server started)";
          const made = await revisionMadeBy((sql, params) => client.query<MadeRow>(sql, params), action);
          // With a retry policy, its next attempt goes back to the queue, for any server to run.
          const next = row.queued && !made ? afterLoss(action, message) : undefined;
          if (next) {
            await requeue(client, next);
            continue;
          }
          const failed = goneServerEnd(action, message, made);
          await client.query("UPDATE actions SET status = $2, end_time = $3, json = $4, change = nextval('plinth_change') WHERE id = $1", [
            row.id,
            failed.status,
            Date.now(),
            encodeAction(failed),
          ]);
          await client.query("DELETE FROM action_requests WHERE action_id = $1", [row.id]);
          ids.push(row.id);
        }
        if (left.length > 0) {
          await client.query("SELECT pg_notify('plinth', 'c'), pg_notify('plinth', 'w')");
        }
        return [...why.values()].map((w) => ({ w, ids }));
      });
      for (const { w, ids } of ended)
        this.#o.onInfo?.(`${w}: its running actions ended interrupted (${ids.join(", ") || "none"}), its queued ones run here or elsewhere`);
    } catch (error) {
      if (!this.#closed) this.#o.onWarning?.(`looking for servers gone on ${this.#db.where} failed; retrying`, error);
    } finally {
      this.#sweeping = false;
    }
  }

  async snapshot(): Promise<{ revision: bigint; models: ModelMeta[]; actions: Action[] }> {
    // Under the write lock: nothing in flight, everything up to the revision committed.
    return this.#db.transaction(async (client) => {
      const { rows } = await client.query<{ last_value: string }>("SELECT last_value FROM plinth_change");
      const models = await client.query<ModelRow>("SELECT * FROM models ORDER BY id");
      const actions = await client.query<{ json: string }>("SELECT json FROM actions WHERE status = ANY ($1::integer[]) ORDER BY id", [
        UNFINISHED_STATUSES,
      ]);
      return {
        revision: BigInt(rows[0]!.last_value),
        models: models.rows.map(modelMeta),
        actions: actions.rows.map((row) => decodeAction(row.json)),
      };
    });
  }

  async changes(after: bigint, limit: number): Promise<FeedChange[]> {
    const { rows } = await this.#db.query<{ change: string; kind: string; id: string; body: string | null }>(
      `SELECT * FROM (
         SELECT change, 'a' AS kind, id, json AS body FROM actions WHERE change > $1
         UNION ALL SELECT change, 'm', id, row_to_json(models)::text FROM models WHERE change > $1
         UNION ALL SELECT change, 'd', id, NULL FROM model_tombstones WHERE change > $1
       ) c ORDER BY change LIMIT $2`,
      [after.toString(), limit],
    );
    return rows.map((row): FeedChange => {
      const revision = BigInt(row.change);
      if (row.kind === "a") return { revision, kind: "action", action: decodeAction(row.body!) };
      if (row.kind === "m") return { revision, kind: "model", model: modelMeta(JSON.parse(row.body!) as ModelRow) };
      return { revision, kind: "model_deleted", modelId: row.id };
    });
  }

  /** This server's committed batches not yet applied, by first revision. */
  readonly #own = new Map<bigint, { changes: FeedChange[]; taken?: (changes: FeedChange[]) => void }>();

  /** A batch of this server's changes committed under these revisions (told by the writes it shares with the store). */
  #committed(first: bigint, actions: CommittedAction[]): void {
    const changes = actions.map(({ revision, action }): FeedChange => ({ revision, kind: "action", action }));
    const waiting = this.#own.get(first);
    if (waiting?.taken) {
      this.#own.delete(first);
      waiting.taken(changes);
    } else this.#own.set(first, { changes });
  }

  async ownChanges(first: bigint, waitMs: number): Promise<FeedChange[] | undefined> {
    const held = this.#own.get(first);
    this.#own.delete(first);
    if (held) return held.changes;
    // The notice came before the commit's answer: that is on its way.
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#own.delete(first);
        resolve(undefined);
      }, waitMs);
      this.#own.set(first, {
        changes: [],
        taken: (changes) => {
          clearTimeout(timer);
          resolve(changes);
        },
      });
    });
  }

  forgetOwn(upTo: bigint): void {
    for (const [first, held] of this.#own) if (first <= upTo && !held.taken) this.#own.delete(first);
  }

  /** Through the group commit the store's changes go by: one turn's changes, this server's and the queue's, in one call. */
  enqueue(action: Action, payloads: StoredPayloads, claim: boolean): Promise<bigint | undefined> {
    return this.#writes.action(action, payloads, claim);
  }

  async queueUpdate(id: string, modelId: string): Promise<void> {
    await this.#db.transaction(async (client) => {
      await client.query("INSERT INTO queued_updates (id, model_id, owner) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING", [
        id,
        modelId,
        this.server,
      ]);
    });
  }

  putModelQuiet(model: ModelRecord, update: string): Promise<ModelMeta | undefined> {
    return this.#writes.model(model, { update });
  }

  async dropUpdate(id: string): Promise<void> {
    await this.#db.query("WITH gone AS (DELETE FROM queued_updates WHERE id = $1 RETURNING 1) SELECT pg_notify('plinth', 'w') FROM gone", [id]);
  }

  async claim(n: number, { modelTypes, dataAccess, held, affinityMs }: ClaimScope): Promise<ClaimedAction[]> {
    if (this.#lost) return [];
    const { rows } = await this.#db.query<{ claimed_id: string; claimed_request: Buffer; claimed_json: string; claimed_revision: string }>(
      "SELECT * FROM plinth_claim($1, $2::text[], $3::text[], $4, $5::text[], $6)",
      [this.server, modelTypes, dataAccess, n, held, Math.round(affinityMs)],
    );
    return rows.map((row) => ({
      action: decodeAction(row.claimed_json),
      request: new Uint8Array(row.claimed_request.buffer, row.claimed_request.byteOffset, row.claimed_request.byteLength),
      modelRevision: BigInt(row.claimed_revision),
    }));
  }

  async takeQueued(actionId: string): Promise<Action | undefined> {
    return this.#db.transaction(async (client) => {
      const taken = await client.query("UPDATE action_requests SET owner = $2 WHERE action_id = $1 AND owner IS NULL", [actionId, this.server]);
      if ((taken.rowCount ?? 0) === 0) return undefined;
      const { rows } = await client.query<{ json: string }>("SELECT json FROM actions WHERE id = $1", [actionId]);
      return rows[0] ? decodeAction(rows[0].json) : undefined;
    });
  }

  async owned(): Promise<string[]> {
    const { rows } = await this.#db.query<{ action_id: string }>("SELECT action_id FROM action_requests WHERE owner = $1", [this.server]);
    return rows.map((row) => row.action_id);
  }

  async release(actionIds: string[], why: string): Promise<void> {
    await this.#db.transaction(async (client) => {
      const { rows } = await client.query<{ id: string; json: string }>(
        `SELECT a.id, a.json FROM action_requests r JOIN actions a ON a.id = r.action_id
         WHERE r.owner = $1 AND r.action_id = ANY ($2::text[]) FOR UPDATE OF r`,
        [this.server, actionIds],
      );
      for (const row of rows) {
        const action = decodeAction(row.json);
        if (action.status === ActionStatus.QUEUED && !action.startTime) {
          await client.query("UPDATE action_requests SET owner = NULL WHERE action_id = $1", [row.id]);
          continue;
        }
        const next = afterLoss(action, why);
        if (next) {
          await requeue(client, next);
          continue;
        }
        const failed = interruptedAction(action, why);
        await client.query("UPDATE actions SET status = $2, end_time = $3, json = $4, change = nextval('plinth_change') WHERE id = $1", [
          row.id,
          failed.status,
          Date.now(),
          encodeAction(failed),
        ]);
        await client.query("DELETE FROM action_requests WHERE action_id = $1", [row.id]);
      }
      if (rows.length > 0) await client.query("SELECT pg_notify('plinth', 'c'), pg_notify('plinth', 'w')");
    });
  }

  async requestCancel(actionId: string, by: string): Promise<void> {
    await this.#db.query("SELECT pg_notify('plinth', $1)", [`x${JSON.stringify({ id: actionId, by })}`]);
  }

  async announce(info: Announced): Promise<void> {
    const { address, shares, ...plugins } = info;
    await this.#db.query("UPDATE plinth_servers SET address = $2, plugins = $3, shares = $4 WHERE server = $1", [
      this.server,
      address,
      JSON.stringify(plugins),
      JSON.stringify(shares),
    ]);
  }

  async servers(): Promise<ServerInfo[]> {
    const { rows } = await this.#db.query<ServerRow>("SELECT * FROM plinth_servers WHERE expires > now() ORDER BY since, server");
    return rows.map((row) => {
      const plugins = JSON.parse(row.plugins) as Partial<Pick<ServerInfo, "modelTypes" | "dataAccess" | "plugins">>;
      return {
        name: row.server,
        host: row.host,
        pid: row.pid,
        since: row.since,
        address: row.address,
        modelTypes: plugins.modelTypes ?? [],
        dataAccess: plugins.dataAccess ?? [],
        plugins: plugins.plugins ?? [],
        self: row.server === this.server,
      };
    });
  }

  /** Leaves the cluster: the row goes, so that no other server waits out this one's lease. */
  async close(): Promise<void> {
    if (this.#closed) return;
    clearInterval(this.#timer);
    if (!this.#lost) {
      await this.#db
        .query("DELETE FROM plinth_servers WHERE server = $1", [this.server])
        .catch((error: unknown) =>
          this.#o.onWarning?.(`leaving ${this.#db.where} failed; the others remove this server once its lease lapses`, error),
        );
    }
    this.#closed = true;
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.end().catch(() => {});
  }
}

/** An action whose next attempt waits in the queue again (afterLoss): no server holds it now. */
async function requeue(client: pg.PoolClient, action: Action): Promise<void> {
  await client.query("UPDATE actions SET status = $2, json = $3, change = nextval('plinth_change') WHERE id = $1", [
    action.id,
    action.status,
    encodeAction(action),
  ]);
  await client.query("UPDATE action_requests SET owner = NULL WHERE action_id = $1", [action.id]);
}
