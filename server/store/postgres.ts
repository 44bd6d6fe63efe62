/**
 * The PostgreSQL store (node-postgres): the same contract as the SQLite store, for teams
 * that already run PostgreSQL — models with their kept revisions (instances as bytea),
 * the action history, the pids of live plugin children (per host).
 *
 * A pool of connections with a bound; the changes of one event-loop turn go to the
 * database in one statement (one round trip), and each caller learns when its own
 * change is committed. A lost database makes calls fail with UNAVAILABLE; the pool
 * reconnects by itself for the next call.
 *
 * One server serves a database at a time, under a lease it renews (every third of
 * backend.lease_seconds). A second server refuses to start, or with backend.standby
 * waits and takes over once the lease lapses — the holder was killed, lost power or its
 * network. Every write checks the lease in its own transaction (and holds it shared, so
 * a takeover waits for writes under way): a server that lost its lease writes nothing
 * more, and learns so at once.
 */
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import pg from "pg";
import { type Action, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { PlinthError } from "../errors.ts";
import { randomHex, runId } from "../run-id.ts";
import { procStat } from "../process/proc.ts";
import { migratePostgres } from "./postgres-migrations.ts";
import { describeHolder } from "./sqlite-lock.ts";
import type { ListActionsQuery, ListModelsQuery, ModelMeta, ModelRecord, Store, StoredAction, StoredPayloads, TrackedChild } from "./store.ts";

export interface PostgresOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Connections at most. */
  poolSize: number;
  /** How long to wait for a connection before a call fails. */
  connectTimeoutMs: number;
  keepRevisions: number;
  maxActions: number;
  maxActionAgeMs: number;
  /** Told how long each commit of action changes took: for metrics. */
  onCommit?: ((seconds: number) => void) | undefined;
  /** Told what went wrong in the background (a renewal that failed, say). */
  onWarning?: ((message: string, error: unknown) => void) | undefined;
  /** How long the lease lasts unless renewed. */
  leaseMs: number;
  /** Wait for another server's lease to lapse instead of refusing to start. */
  standby: boolean;
  /** Told what it waits for, as a standby. */
  onInfo?: ((message: string) => void) | undefined;
  /** Told once that this server lost its lease: it must stop serving. */
  onLeaseLost?: ((message: string) => void) | undefined;
  /** Stops a standby's wait (the server was asked to stop while it waited). */
  signal?: AbortSignal | undefined;
}

interface LeaseRow {
  server: string;
  host: string;
  pid: number;
  since: Date;
  expires: Date;
  /** Milliseconds until it lapses, by the database's clock. */
  left: string;
}

/** Whether a process of this host is alive (a zombie counts as gone). */
function processAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** How often a standby looks at the lease: one small query, four times a second. */
const STANDBY_POLL_MS = 250;

const holderOf = (row: LeaseRow) => describeHolder({ pid: row.pid, host: row.host, since: row.since.toISOString() });

/**
 * Fences a write: true only while this server holds the lease. A single statement sees
 * the lease as it is when the statement runs; a transaction takes it shared (below), so
 * that a takeover waits for it to end.
 */
const HOLDS_LEASE = "EXISTS (SELECT 1 FROM plinth_lease WHERE name = 'engine' AND server = $LEASE AND expires > now())";

const ENDED = [ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED];

interface ModelRow {
  id: string;
  model_type: string;
  revision: string;
  oldest_revision: string;
  create_time: string;
  update_time: string;
  instance_size: string;
  action_id: string;
}

function meta(row: ModelRow): ModelMeta {
  return {
    id: row.id,
    modelType: row.model_type,
    revision: BigInt(row.revision),
    oldestRevision: BigInt(row.oldest_revision),
    createTime: new Date(Number(row.create_time)),
    updateTime: new Date(Number(row.update_time)),
    instanceSize: Number(row.instance_size),
    actionId: row.action_id,
  };
}

/** The URL without its password: what errors and logs may show. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(not a URL)";
  }
}

/** Errors that mean the database cannot be reached (now): the call may succeed later. */
function isConnectionError(error: unknown): boolean {
  const code = String((error as { code?: string }).code ?? "");
  const message = String((error as Error).message ?? "");
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "EPIPE", "57P01", "57P02", "57P03"].includes(code) ||
    code.startsWith("08") ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(message)
  );
}

interface PendingWrite {
  action: Action;
  payloads: StoredPayloads | undefined;
  settle: { resolve(): void; reject(error: unknown): void }[];
}

export class PostgresStore implements Store {
  readonly id: string;
  readonly owner: string;
  readonly #o: PostgresOptions;
  readonly #pool: pg.Pool;
  readonly #where: string;
  /** This run's name in the lease. */
  readonly #leaseId: string;
  #renewTimer: ReturnType<typeof setInterval> | undefined;
  #leaseLost = false;
  /** The server whose lapsed lease this one took over, if it did. */
  readonly takenOverFrom: string | undefined;
  readonly keepsRequests = true;
  readonly #host = hostname();
  readonly #pending = new Map<string, PendingWrite>();
  #flushTimer: ReturnType<typeof setImmediate> | undefined;
  /** The commit under way: reads wait for it, so that they see every change made before them. */
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(options: PostgresOptions, pool: pg.Pool, id: string, lease: { id: string; takenOverFrom?: string }) {
    this.#o = options;
    this.#pool = pool;
    this.#where = redactUrl(options.url);
    this.id = id;
    this.owner = `${id}.${runId()}`;
    this.#leaseId = lease.id;
    this.takenOverFrom = lease.takenOverFrom;
    this.#renewTimer = setInterval(() => void this.#renew(), options.leaseMs / 3);
    this.#renewTimer.unref();
  }

  /**
   * Extends the lease. It is this server's for as long as the row names it: after an
   * outage longer than the lease, a renewal that finds it still named keeps serving (no
   * other server took over meanwhile); one that finds another name has lost it.
   */
  async #renew(): Promise<void> {
    if (this.#closed || this.#leaseLost) return;
    try {
      const { rowCount } = await this.#pool.query(
        "UPDATE plinth_lease SET expires = now() + $2 * interval '1 millisecond' WHERE name = 'engine' AND server = $1",
        [this.#leaseId, this.#o.leaseMs],
      );
      if ((rowCount ?? 0) === 0)
        this.#loseLease("another server took over after its lease lapsed (this server stalled, or could not reach the database)");
    } catch (error) {
      if (!this.#closed) this.#o.onWarning?.(`renewing this server's lease on ${this.#where} failed; retrying`, error);
    }
  }

  #loseLease(why: string): void {
    if (this.#leaseLost) return;
    this.#leaseLost = true;
    clearInterval(this.#renewTimer);
    this.#o.onLeaseLost?.(
      `this server lost its lease on ${this.#where}: ${why}; another server may have taken over, so this one writes nothing more and stops`,
    );
  }

  /**
   * Takes the lease on the database: at once when nobody holds it (or its holder's
   * lapsed); else refuses, or as a standby waits for it to lapse.
   */
  static async #acquireLease(client: pg.Client, options: PostgresOptions, where: string): Promise<{ id: string; takenOverFrom?: string }> {
    const id = randomHex(8);
    for (let waiting = false; ; ) {
      await client.query("BEGIN");
      try {
        const { rows } = await client.query<LeaseRow>(
          `SELECT server, host, pid, since, expires, (extract(epoch FROM expires - now()) * 1000)::bigint AS left
           FROM plinth_lease WHERE name = 'engine' FOR UPDATE`,
        );
        const held = rows[0];
        // A holder on this host whose process is gone crashed: no need to wait out its lease.
        const gone = held !== undefined && held.host === hostname() && !processAlive(held.pid);
        if (held && Number(held.left) > 0 && !gone) {
          await client.query("ROLLBACK");
          const who = holderOf(held);
          if (!options.standby) {
            throw new PlinthError(
              "invalid_argument",
              `config backend.url: ${where} is in use by ${who}; one database serves one server at a time: stop that one, point backend.url at another database, or set backend.standby: true to take over when it stops`,
            );
          }
          if (!waiting) options.onInfo?.(`standing by: ${where} is served by ${who}; this server takes over once its lease lapses`);
          waiting = true;
          // Often: a holder that stops cleanly gives the lease back, one that crashes here is seen gone.
          await sleep(Math.min(Number(held.left) + 50, STANDBY_POLL_MS), undefined, { signal: options.signal }).catch((error: unknown) => {
            throw options.signal?.reason ?? error;
          });
          continue;
        }
        await client.query(
          `INSERT INTO plinth_lease (name, server, host, pid, since, expires) VALUES ('engine', $1, $2, $3, now(), now() + $4 * interval '1 millisecond')
           ON CONFLICT (name) DO UPDATE SET server = excluded.server, host = excluded.host, pid = excluded.pid, since = excluded.since, expires = excluded.expires`,
          [id, hostname(), process.pid, options.leaseMs],
        );
        await client.query("COMMIT");
        // A holder that stopped cleanly gave its lease back (expires = since): nothing was taken from it.
        const from =
          !held || held.expires.getTime() <= held.since.getTime()
            ? undefined
            : gone
              ? `${holderOf(held)} is gone (it exited without giving back its lease)`
              : `${holderOf(held)} stopped responding (its lease lapsed)`;
        return { id, ...(from ? { takenOverFrom: from } : {}) };
      } catch (error) {
        await client.query("ROLLBACK").catch(() => {});
        throw error;
      }
    }
  }

  /** Connects, takes the database for this server, brings the schema up to date. */
  static async open(options: PostgresOptions): Promise<PostgresStore> {
    const where = redactUrl(options.url);
    const settings = { connectionString: options.url, connectionTimeoutMillis: options.connectTimeoutMs };
    const lock = new pg.Client(settings);
    lock.on("error", () => {}); // Until open() is done, errors come back as rejections.
    try {
      await lock.connect();
    } catch (error) {
      await lock.end().catch(() => {});
      throw new PlinthError(
        "invalid_argument",
        `config backend.url: cannot connect to ${where} (${(error as Error).message || (error as { code?: string }).code}); check that PostgreSQL runs there and that the URL, user and password are right`,
      );
    }
    const pool = new pg.Pool({ ...settings, max: options.poolSize, idleTimeoutMillis: 30_000 });
    // An idle connection that breaks is dropped by the pool; the next call opens another.
    pool.on("error", (error) => options.onWarning?.(`an idle connection to ${where} broke`, error));
    try {
      await migratePostgres(lock, where);
      const lease = await PostgresStore.#acquireLease(lock, options, where);
      await lock.query("INSERT INTO plinth_meta (key, value) VALUES ('id', $1) ON CONFLICT (key) DO NOTHING", [randomHex(6)]);
      const id = (await lock.query<{ value: string }>("SELECT value FROM plinth_meta WHERE key = 'id'")).rows[0]!.value;
      await lock.end().catch(() => {});
      return new PostgresStore(options, pool, id, lease);
    } catch (error) {
      await lock.end().catch(() => {});
      await pool.end().catch(() => {});
      if (PlinthError.is(error)) throw error;
      throw new PlinthError("invalid_argument", `config backend.url: ${where}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Runs a query on the pool, turning a lost database into UNAVAILABLE. */
  async #query<R extends pg.QueryResultRow>(sql: string | pg.QueryConfig, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.#closed) throw new PlinthError("unavailable", `the store ${this.#where} is closed`);
    try {
      return await this.#pool.query<R>(sql as string, params);
    } catch (error) {
      throw this.#explain(error);
    }
  }

  /** Runs `fn` in a transaction on one connection of the pool. */
  async #transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw new PlinthError("unavailable", `the store ${this.#where} is closed`);
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#explain(error);
    }
    let broken = false;
    try {
      await client.query("BEGIN");
      // Held shared until the commit: a takeover waits for this transaction. One whose
      // server stalls in it is ended by PostgreSQL within the lease, so a takeover never
      // waits longer than that.
      await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${Math.ceil(this.#o.leaseMs)}`);
      const { rows } = await client.query<{ held: boolean }>(
        "SELECT EXISTS (SELECT 1 FROM plinth_lease WHERE name = 'engine' AND server = $1 AND expires > now() FOR SHARE) AS held",
        [this.#leaseId],
      );
      if (!rows[0]?.held) throw this.#fenced();
      const result = await fn(client);
      await client.query("COMMIT");
      return result;
    } catch (error) {
      broken = isConnectionError(error);
      if (!broken) await client.query("ROLLBACK").catch(() => {});
      throw this.#explain(error);
    } finally {
      client.release(broken);
    }
  }

  /** The error of a write refused because this server's lease has lapsed, or is another's. */
  #fenced(): PlinthError {
    // Lapsed but still ours, a renewal may yet keep it; another's, it is lost.
    void this.#renew();
    return new PlinthError("unavailable", `this server's lease on ${this.#where} has lapsed; retry in a moment, or on the server that took over`);
  }

  #explain(error: unknown): unknown {
    if (PlinthError.is(error)) return error;
    const message = (error as Error).message || String((error as { code?: string }).code);
    if (isConnectionError(error)) {
      return new PlinthError("unavailable", `the database ${this.#where} is unreachable (${message}); the server reconnects by itself: retry`, {
        cause: error,
      });
    }
    if ((error as { code?: string }).code === "53100") {
      return new PlinthError("queue_full", `the database ${this.#where} is full: ${message}`, { cause: error });
    }
    return error;
  }

  // ---- models ----

  async getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined> {
    const { rows } = await this.#query<ModelRow & { instance: Buffer; r_size: string; r_action: string; r_time: string; r_revision: string }>(
      `SELECT m.*, r.instance, r.instance_size AS r_size, r.action_id AS r_action, r.create_time AS r_time, r.revision AS r_revision
       FROM models m JOIN model_revisions r ON r.model_id = m.id AND r.revision = coalesce($2::bigint, m.revision)
       WHERE m.id = $1`,
      [id, revision === undefined ? null : revision.toString()],
    );
    const row = rows[0];
    if (!row) return undefined;
    const latest = meta(row);
    const instance = new Uint8Array(row.instance.buffer, row.instance.byteOffset, row.instance.byteLength);
    if (BigInt(row.r_revision) === latest.revision) return { ...latest, instance };
    return {
      ...latest,
      revision: BigInt(row.r_revision),
      updateTime: new Date(Number(row.r_time)),
      instanceSize: Number(row.r_size),
      actionId: row.r_action,
      instance,
    };
  }

  async putModel(model: ModelRecord): Promise<ModelMeta> {
    const oldest = model.revision - BigInt(this.#o.keepRevisions) + 1n;
    const oldestRevision = oldest > model.oldestRevision ? oldest : model.oldestRevision;
    const stored = { ...model, oldestRevision: oldestRevision < 1n ? 1n : oldestRevision };
    const instance = Buffer.from(stored.instance.buffer, stored.instance.byteOffset, stored.instance.byteLength);
    await this.#transaction(async (client) => {
      await client.query(
        `INSERT INTO models (id, model_type, revision, oldest_revision, create_time, update_time, instance_size, action_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, oldest_revision = excluded.oldest_revision,
           update_time = excluded.update_time, instance_size = excluded.instance_size, action_id = excluded.action_id`,
        [
          stored.id,
          stored.modelType,
          stored.revision.toString(),
          stored.oldestRevision.toString(),
          stored.createTime.getTime(),
          stored.updateTime.getTime(),
          instance.byteLength,
          stored.actionId,
        ],
      );
      await client.query(
        `INSERT INTO model_revisions (model_id, revision, instance, instance_size, action_id, create_time) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (model_id, revision) DO UPDATE SET instance = excluded.instance, instance_size = excluded.instance_size,
           action_id = excluded.action_id, create_time = excluded.create_time`,
        [stored.id, stored.revision.toString(), instance, instance.byteLength, stored.actionId, stored.updateTime.getTime()],
      );
      await client.query("DELETE FROM model_revisions WHERE model_id = $1 AND revision < $2", [stored.id, stored.oldestRevision.toString()]);
    });
    const { instance: _, ...rest } = stored;
    return rest;
  }

  async deleteModel(id: string): Promise<boolean> {
    return this.#transaction(async (client) => ((await client.query("DELETE FROM models WHERE id = $1", [id])).rowCount ?? 0) > 0);
  }

  async allModels(): Promise<ModelMeta[]> {
    return (await this.#query<ModelRow>("SELECT * FROM models ORDER BY id")).rows.map(meta);
  }

  async listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelType) where.push(`model_type = $${params.push(query.modelType)}`);
    if (query.afterId) where.push(`id > $${params.push(query.afterId)}`);
    const sql = `SELECT * FROM models ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id LIMIT $${params.push(query.limit)}`;
    return (await this.#query<ModelRow>(sql, params)).rows.map(meta);
  }

  // ---- actions ----

  /**
   * Group commit: the changes of one turn of the event loop go in one statement (and two
   * changes of one action in that turn in one row); each caller learns whether its own
   * change was committed.
   */
  putAction(action: Action, payloads?: StoredPayloads): Promise<void> {
    const previous = this.#pending.get(action.id);
    const merged = previous?.payloads || payloads ? { ...previous?.payloads, ...payloads } : undefined;
    const write: PendingWrite = { action, payloads: merged, settle: [] };
    const committed = new Promise<void>((resolve, reject) => write.settle.push({ resolve, reject }));
    if (previous) write.settle.unshift(...previous.settle);
    this.#pending.delete(action.id);
    this.#pending.set(action.id, write);
    this.#flushTimer ??= setImmediate(() => void this.#flush());
    return committed;
  }

  /** Commits what is pending, after the commit under way. */
  #flush(): Promise<void> {
    clearImmediate(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#pending.size === 0) return this.#flushing;
    const writes = [...this.#pending.values()];
    this.#pending.clear();
    const commit = this.#flushing.then(() => this.#commit(writes));
    this.#flushing = commit;
    return commit;
  }

  async #commit(writes: PendingWrite[]): Promise<void> {
    const started = performance.now();
    try {
      await this.#writeActions(writes);
      this.#o.onCommit?.((performance.now() - started) / 1000);
      for (const w of writes) for (const s of w.settle) s.resolve();
    } catch (error) {
      if (writes.length === 1 || PlinthError.is(error)) {
        for (const w of writes) for (const s of w.settle) s.reject(error);
        return;
      }
      // Which one failed? Each on its own: only the writes that fail alone fail.
      for (const w of writes) {
        try {
          await this.#writeActions([w]);
          for (const s of w.settle) s.resolve();
        } catch (own) {
          for (const s of w.settle) s.reject(own);
        }
      }
    }
  }

  async #writeActions(writes: PendingWrite[]): Promise<void> {
    const ms = (t: Action["createTime"]) => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : null);
    const columns = {
      id: [] as string[],
      model: [] as string[],
      status: [] as number[],
      created: [] as (number | null)[],
      ended: [] as (number | null)[],
      by: [] as string[],
      json: [] as string[],
    };
    for (const { action } of writes) {
      columns.id.push(action.id);
      columns.model.push(action.modelId);
      columns.status.push(action.status);
      columns.created.push(ms(action.createTime));
      columns.ended.push(ms(action.endTime));
      columns.by.push(action.createdBy);
      columns.json.push(toJsonString(ActionSchema, action));
    }
    // Fenced in the statement itself: nothing is written once this server lost its lease.
    // New actions' requests go with it, and those of the actions that ended go (a
    // takeover has nothing to run again): one statement, one round trip, still.
    const ended = writes.filter((w) => ENDED.includes(w.action.status)).map((w) => w.action.id);
    const kept = writes.filter((w) => w.payloads?.request && !ENDED.includes(w.action.status));
    const fence = HOLDS_LEASE.replace("$LEASE", "$8");
    const upsert = `WITH done AS (DELETE FROM action_requests WHERE action_id = ANY($9::text[]) AND ${fence}),
       kept AS (INSERT INTO action_requests (action_id, request) SELECT * FROM unnest($10::text[], $11::bytea[]) WHERE ${fence}
         ON CONFLICT (action_id) DO NOTHING)
       INSERT INTO actions (id, model_id, status, create_time, end_time, created_by, json)
       SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
       WHERE ${fence}
       ON CONFLICT (id) DO UPDATE SET model_id = excluded.model_id, status = excluded.status,
         end_time = excluded.end_time, json = excluded.json`;
    const requests = kept.map((w) => Buffer.from(w.payloads!.request!.buffer, w.payloads!.request!.byteOffset, w.payloads!.request!.byteLength));
    const params = [
      ...[columns.id, columns.model, columns.status, columns.created, columns.ended, columns.by, columns.json],
      this.#leaseId,
      ended,
      kept.map((w) => w.action.id),
      requests,
    ];
    const withPayloads = writes.filter((w) => w.payloads?.args || w.payloads?.prediction);
    if (withPayloads.length === 0) {
      // Prepared once per connection: the statement is planned once, not per commit.
      const { rowCount } = await this.#query({ name: "plinth-write-actions", text: upsert }, params);
      if ((rowCount ?? 0) === 0) throw this.#fenced();
      return;
    }
    await this.#transaction(async (client) => {
      await client.query({ name: "plinth-write-actions", text: upsert, values: params });
      for (const { action, payloads } of withPayloads) {
        const shown = payloads!;
        const args = shown.args ? Buffer.from(toBinary(ActionSchema, create(ActionSchema, shown.args))) : null;
        const prediction = shown.prediction ? Buffer.from(toBinary(ArgSchema, shown.prediction)) : null;
        await client.query(
          `INSERT INTO action_payloads (action_id, args, prediction) VALUES ($1, $2, $3)
           ON CONFLICT (action_id) DO UPDATE SET args = coalesce(excluded.args, action_payloads.args),
             prediction = coalesce(excluded.prediction, action_payloads.prediction)`,
          [action.id, args, prediction],
        );
      }
    });
  }

  async requests(ids: string[]): Promise<Map<string, Uint8Array>> {
    const { rows } = await this.#query<{ action_id: string; request: Buffer }>(
      "SELECT action_id, request FROM action_requests WHERE action_id = ANY($1::text[])",
      [ids],
    );
    return new Map(rows.map((r) => [r.action_id, new Uint8Array(r.request.buffer, r.request.byteOffset, r.request.byteLength)]));
  }

  async getAction(id: string, withPayloads = false): Promise<StoredAction | undefined> {
    await this.#flush().catch(() => {});
    const row = (await this.#query<{ id: string; json: string }>("SELECT id, json FROM actions WHERE id = $1", [id])).rows[0];
    if (!row) return undefined;
    return (await this.#stored([row], withPayloads))[0];
  }

  async #stored(rows: { id: string; json: string }[], withPayloads: boolean): Promise<StoredAction[]> {
    const kept = new Map<string, { args: Buffer | null; prediction: Buffer | null }>();
    if (withPayloads && rows.length > 0) {
      const { rows: payloadRows } = await this.#query<{ action_id: string; args: Buffer | null; prediction: Buffer | null }>(
        "SELECT action_id, args, prediction FROM action_payloads WHERE action_id = ANY($1::text[])",
        [rows.map((r) => r.id)],
      );
      for (const p of payloadRows) kept.set(p.action_id, p);
    }
    return rows.map((row) => {
      const action = fromJsonString(ActionSchema, row.json);
      const p = kept.get(row.id);
      if (!p) return { action };
      const payloads: StoredPayloads = {};
      if (p.args) {
        const { args, kwargs } = fromBinary(ActionSchema, p.args);
        payloads.args = { args, kwargs };
      }
      if (p.prediction) payloads.prediction = fromBinary(ArgSchema, p.prediction);
      return { action, payloads };
    });
  }

  async listActions(query: ListActionsQuery, withPayloads = false): Promise<StoredAction[]> {
    await this.#flush().catch(() => {});
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelId) where.push(`model_id = $${params.push(query.modelId)}`);
    if (query.statuses?.length) where.push(`status = ANY($${params.push(query.statuses)}::integer[])`);
    if (query.beforeId) where.push(`id < $${params.push(query.beforeId)}`);
    if (query.createdAfter) where.push(`create_time >= $${params.push(query.createdAfter.getTime())}`);
    if (query.createdBefore) where.push(`create_time < $${params.push(query.createdBefore.getTime())}`);
    if (query.createdBy) where.push(`created_by = $${params.push(query.createdBy)}`);
    const sql = `SELECT id, json FROM actions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.push(query.limit)}`;
    return this.#stored((await this.#query<{ id: string; json: string }>(sql, params)).rows, withPayloads);
  }

  async unfinishedActions(): Promise<Action[]> {
    await this.#flush().catch(() => {});
    const { rows } = await this.#query<{ json: string }>("SELECT json FROM actions WHERE NOT (status = ANY($1::integer[])) ORDER BY id", [ENDED]);
    return rows.map((row) => fromJsonString(ActionSchema, row.json));
  }

  async pruneActions(now: Date): Promise<number> {
    await this.#flush().catch(() => {});
    return this.#transaction(async (client) => {
      let removed =
        (await client.query("DELETE FROM actions WHERE end_time IS NOT NULL AND end_time < $1", [now.getTime() - this.#o.maxActionAgeMs])).rowCount ??
        0;
      const { rows } = await client.query<{ n: string }>("SELECT count(*) AS n FROM actions WHERE end_time IS NOT NULL");
      const excess = Number(rows[0]!.n) - this.#o.maxActions;
      if (excess > 0) {
        removed +=
          (await client.query("DELETE FROM actions WHERE id IN (SELECT id FROM actions WHERE end_time IS NOT NULL ORDER BY id LIMIT $1)", [excess]))
            .rowCount ?? 0;
      }
      return removed;
    });
  }

  // ---- children (per host: a pid means something only on its own machine) ----

  async trackChild(child: TrackedChild): Promise<void> {
    await this.#query(
      "INSERT INTO children (host, pid, start_ticks) VALUES ($1, $2, $3) ON CONFLICT (host, pid) DO UPDATE SET start_ticks = excluded.start_ticks",
      [this.#host, child.pid, child.startTicks],
    );
  }

  async untrackChild(pid: number): Promise<void> {
    await this.#query("DELETE FROM children WHERE host = $1 AND pid = $2", [this.#host, pid]);
  }

  async trackedChildren(): Promise<TrackedChild[]> {
    const { rows } = await this.#query<{ pid: number; start_ticks: string }>("SELECT pid, start_ticks FROM children WHERE host = $1", [this.#host]);
    return rows.map((row) => ({ pid: row.pid, startTicks: row.start_ticks }));
  }

  async clearTrackedChildren(): Promise<void> {
    await this.#query("DELETE FROM children WHERE host = $1", [this.#host]);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#flush().catch(() => {});
    clearInterval(this.#renewTimer);
    // Gives the lease back (expires = since), so that a standby takes over at once, not after it.
    if (!this.#leaseLost) {
      await this.#pool
        .query("UPDATE plinth_lease SET expires = since WHERE name = 'engine' AND server = $1", [this.#leaseId])
        .catch((error: unknown) => this.#o.onWarning?.(`giving back the lease on ${this.#where} failed; a standby takes over once it lapses`, error));
    }
    this.#closed = true;
    await this.#pool.end().catch(() => {});
  }
}
