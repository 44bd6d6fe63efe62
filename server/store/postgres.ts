/**
 * The PostgreSQL store (node-postgres): the same contract as the SQLite store, for teams
 * that already run PostgreSQL — models with their kept revisions (instances as bytea),
 * the action history, the pids of live plugin children (per host) — and a Cluster:
 * several servers serve one database (postgres-cluster.ts).
 *
 * A pool of connections with a bound; the changes of one event-loop turn go to the
 * database in one call (one round trip), and each caller learns when its own change is
 * committed. A lost database makes calls fail with UNAVAILABLE; the pool reconnects by
 * itself for the next call. Every write takes one lock first (revisions in commit
 * order) and checks this server's lease: a server that lost it writes nothing more.
 */
import { hostname } from "node:os";
import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import pg from "pg";
import { type Action, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { PlinthError } from "../errors.ts";
import { randomHex } from "../run-id.ts";
import { type ClusterOptions, HOLDS_LEASE, modelMeta, type PgAccess, PostgresCluster, revisionMadeBy, WRITE_LOCK } from "./postgres-cluster.ts";
import { migratePostgres } from "./postgres-migrations.ts";
import {
  CommitUnknownError,
  type EndedWith,
  type FeedChange,
  type ListActionsQuery,
  type ListModelsQuery,
  type ModelMeta,
  type ModelRecord,
  type Store,
  type StoredAction,
  type StoredPayloads,
  type TrackedChild,
} from "./store.ts";
import { revisionCommitted } from "./test-stop.ts";

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
  /** How long a server's lease lasts unless renewed. */
  leaseMs: number;
  /** Told what the cluster did: a server gone, its actions ended. */
  onInfo?: ((message: string) => void) | undefined;
  /** Told once that this server lost its lease: it must stop serving. */
  onLeaseLost?: ((message: string) => void) | undefined;
}

const ENDED = [ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED];

type ModelRow = Parameters<typeof modelMeta>[0] & Record<string, string>;

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

/** An action's change as plinth_write_actions takes it. */
interface ActionWrite {
  action: Action;
  payloads?: StoredPayloads | undefined;
  /** A new action this server would run at once, if its model is free. */
  claim: boolean;
}

/** What plinth_write_actions answers: nothing (nulls) when this server's lease is gone. */
interface WriteResult {
  claimed: string[] | null;
  claimed_revisions: string[];
  first: string;
  written: string[];
}

/** The call of the group commit (migration 4): one statement, one round trip. */
const WRITE_CALL = `SELECT * FROM plinth_write_actions($1, $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::bigint[], $7::text[], $8::text[],
   $9::text[], $10::text[], $11::bytea[], $12::text[], $13::text[], $14::text[], $15::boolean[], $16::boolean)`;

/** What a write stored: the claims made, and the changes committed, with their revisions. */
interface Written {
  claimed: Map<string, bigint>;
  first: bigint;
  changes: FeedChange[];
}

interface PendingWrite extends ActionWrite {
  payloads: StoredPayloads | undefined;
  /** Told whether this server claimed the action: its model's revision then. */
  settle: { resolve(claimed: bigint | undefined): void; reject(error: unknown): void }[];
}

export class PostgresStore implements Store {
  readonly id: string;
  readonly owner: string;
  readonly #o: PostgresOptions;
  readonly #pool: pg.Pool;
  readonly #where: string;
  readonly #cluster: PostgresCluster;
  readonly #host = hostname();
  readonly #pending = new Map<string, PendingWrite>();
  #flushTimer: ReturnType<typeof setImmediate> | undefined;
  /** The commit under way: reads wait for it, so that they see every change made before them. */
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(options: PostgresOptions, pool: pg.Pool, id: string) {
    this.#o = options;
    this.#pool = pool;
    this.#where = redactUrl(options.url);
    this.id = id;
    const access: PgAccess = {
      url: options.url,
      where: this.#where,
      query: (sql, params) => this.#query(sql, params),
      transaction: (fn) => this.#transaction(fn),
      enqueue: (action, payloads, claim) => this.#write(action, payloads, claim),
      putModelQuiet: (model, queuedUpTo) => this.#putModel(model, queuedUpTo),
      queueEnd: (modelId) => this.#queueEnd(modelId),
    };
    const clusterOptions: ClusterOptions = {
      leaseMs: options.leaseMs,
      onWarning: options.onWarning,
      onInfo: options.onInfo,
      onLeaseLost: options.onLeaseLost,
    };
    this.#cluster = new PostgresCluster(access, clusterOptions);
    // Children are marked per server: servers on one host tell their own from a dead one's.
    this.owner = `${id}.${this.#cluster.server}`;
  }

  get cluster(): PostgresCluster {
    return this.#cluster;
  }

  /** Connects, brings the schema up to date, joins the servers of the database. */
  static async open(options: PostgresOptions): Promise<PostgresStore> {
    const where = redactUrl(options.url);
    const settings = { connectionString: options.url, connectionTimeoutMillis: options.connectTimeoutMs };
    const setup = new pg.Client(settings);
    setup.on("error", () => {}); // Until open() is done, errors come back as rejections.
    try {
      await setup.connect();
    } catch (error) {
      await setup.end().catch(() => {});
      throw new PlinthError(
        "invalid_argument",
        `config backend.url: cannot connect to ${where} (${(error as Error).message || (error as { code?: string }).code}); check that PostgreSQL runs there and that the URL, user and password are right`,
      );
    }
    const pool = new pg.Pool({ ...settings, max: options.poolSize, idleTimeoutMillis: 30_000 });
    // An idle connection that breaks is dropped by the pool; the next call opens another.
    pool.on("error", (error) => options.onWarning?.(`an idle connection to ${where} broke`, error));
    let store: PostgresStore | undefined;
    try {
      await migratePostgres(setup, where);
      await setup.query("INSERT INTO plinth_meta (key, value) VALUES ('id', $1) ON CONFLICT (key) DO NOTHING", [randomHex(6)]);
      const id = (await setup.query<{ value: string }>("SELECT value FROM plinth_meta WHERE key = 'id'")).rows[0]!.value;
      store = new PostgresStore(options, pool, id);
      await store.#cluster.join(setup);
      await setup.end().catch(() => {});
      // What a server that crashed here left behind is ended (or queued again) before this one serves.
      await store.#cluster.sweepNow();
      return store;
    } catch (error) {
      await setup.end().catch(() => {});
      if (store) await store.#cluster.close();
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
    let committing = false;
    // The pool listens for a broken connection only while it is idle: a checked-out one that
    // breaks says so here (its query fails with it), not as an uncaught error.
    const onError = () => (broken = true);
    client.on("error", onError);
    try {
      await client.query("BEGIN");
      // A server that stalls in a transaction holds the write lock: PostgreSQL ends the
      // transaction within the lease, so the others never wait longer than that.
      await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${Math.ceil(this.#o.leaseMs)}`);
      // The lock first, then the lease: a statement sees what was committed when it began.
      await client.query(`SELECT pg_advisory_xact_lock(${WRITE_LOCK})`);
      const { rows } = await client.query<{ held: boolean }>(`SELECT ${HOLDS_LEASE.replace("$LEASE", "$1")} AS held`, [this.#cluster.server]);
      if (!rows[0]?.held) throw this.#fenced();
      const result = await fn(client);
      committing = true;
      await client.query("COMMIT");
      return result;
    } catch (error) {
      broken ||= isConnectionError(error);
      if (!broken) await client.query("ROLLBACK").catch(() => {});
      // Sent before the connection broke, a COMMIT may have been made: only the database knows.
      throw committing && broken ? this.#commitUnknown(error) : this.#explain(error);
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  #commitUnknown(error: unknown): CommitUnknownError {
    const message = (error as Error).message || String((error as { code?: string }).code);
    return new CommitUnknownError(
      "unavailable",
      `the database ${this.#where} became unreachable (${message}) as it was committing the change: whether it was stored is known once it answers again; the server reconnects by itself`,
      { cause: error },
    );
  }

  /** The error of a write refused because this server's lease has lapsed, or is another's. */
  #fenced(): PlinthError {
    // Lapsed but still there, a renewal keeps it; removed by another server, it is lost.
    void this.#cluster.renew();
    return new PlinthError("unavailable", `this server's lease on ${this.#where} has lapsed; retry in a moment, or on another server`);
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
    const latest = modelMeta(row);
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

  async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    return (await this.#putModel(model, undefined, ended))!;
  }

  /**
   * Stores the model's next revision, with the end of the action that made it when
   * `ended`. `quiet`: only while no call on the model is claimed and none queued up to
   * that place in the queue is left; undefined when one is.
   */
  async #putModel(model: ModelRecord, quiet?: bigint, ended?: EndedWith): Promise<ModelMeta | undefined> {
    const oldest = model.revision - BigInt(this.#o.keepRevisions) + 1n;
    const oldestRevision = oldest > model.oldestRevision ? oldest : model.oldestRevision;
    const stored = { ...model, oldestRevision: oldestRevision < 1n ? 1n : oldestRevision };
    const { instance: bytes, ...meta } = stored;
    const instance = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const end = ended?.(meta);
    const outcome = await this.#transaction(async (client) => {
      if (quiet !== undefined) {
        const { rows } = await client.query("SELECT 1 FROM action_requests WHERE model_id = $1 AND (owner IS NOT NULL OR seq <= $2) LIMIT 1", [
          stored.id,
          quiet.toString(),
        ]);
        if (rows.length > 0) return undefined;
      }
      // The revision after the one the caller read, or nothing: another server's change is never overwritten.
      const { rowCount } = await client.query(
        `INSERT INTO models (id, model_type, revision, oldest_revision, create_time, update_time, instance_size, action_id, change)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nextval('plinth_change'))
         ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, oldest_revision = excluded.oldest_revision,
           update_time = excluded.update_time, instance_size = excluded.instance_size, action_id = excluded.action_id,
           change = excluded.change
         WHERE models.revision = excluded.revision - 1`,
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
      if ((rowCount ?? 0) === 0) {
        throw new PlinthError(
          "failed_precondition",
          `model ${stored.id} changed meanwhile: another call stored a revision after ${stored.revision - 1n} first; retry on its latest revision`,
        );
      }
      await client.query("DELETE FROM model_revisions WHERE model_id = $1 AND revision < $2", [stored.id, stored.oldestRevision.toString()]);
      const written = end && (await this.#writeActionsIn(client, [{ ...end, claim: false }]));
      if (written && written.changes.length === 0) {
        throw new PlinthError(
          "failed_precondition",
          `action ${end!.action.id} had ended already (another server ended it): its revision is not stored`,
        );
      }
      await client.query("SELECT pg_notify('plinth', 'c')");
      return { written };
    });
    if (!outcome) return undefined;
    if (outcome.written) this.#cluster.committed(outcome.written.first, outcome.written.changes);
    revisionCommitted(stored.revision);
    return meta;
  }

  /** Where the model's queue ends now: its calls up to there come before a change made now. */
  async #queueEnd(modelId: string): Promise<bigint> {
    const { rows } = await this.#query<{ end: string | null }>("SELECT max(seq) AS end FROM action_requests WHERE model_id = $1", [modelId]);
    return BigInt(rows[0]?.end ?? 0);
  }

  async deleteModel(id: string): Promise<boolean> {
    return this.#transaction(async (client) => {
      // Not while any server has a call on it queued or running.
      const { rows } = await client.query<{ busy: string }>(
        `WITH gone AS (DELETE FROM models WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM action_requests WHERE model_id = $1) RETURNING id)
         SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT count(*) FROM action_requests WHERE model_id = $1) AS busy`,
        [id],
      );
      const busy = Number(rows[0]!.busy);
      if (busy > 0) {
        throw new PlinthError(
          "failed_precondition",
          `model ${id} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
        );
      }
      const deleted = await client.query(
        `INSERT INTO model_tombstones (id, change) SELECT $1, nextval('plinth_change') WHERE NOT EXISTS (SELECT 1 FROM models WHERE id = $1)
         ON CONFLICT (id) DO UPDATE SET change = excluded.change, deleted = now()`,
        [id],
      );
      await client.query("SELECT pg_notify('plinth', 'c')");
      return (deleted.rowCount ?? 0) > 0;
    });
  }

  async allModels(): Promise<ModelMeta[]> {
    return (await this.#query<ModelRow>("SELECT * FROM models ORDER BY id")).rows.map(modelMeta);
  }

  async listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelType) where.push(`model_type = $${params.push(query.modelType)}`);
    if (query.afterId) where.push(`id > $${params.push(query.afterId)}`);
    const sql = `SELECT * FROM models ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id LIMIT $${params.push(query.limit)}`;
    return (await this.#query<ModelRow>(sql, params)).rows.map(modelMeta);
  }

  // ---- actions ----

  /**
   * Group commit: the changes of one turn of the event loop go in one statement (and two
   * changes of one action in that turn in one row); each caller learns whether its own
   * change was committed.
   */
  async putAction(action: Action, payloads?: StoredPayloads): Promise<void> {
    await this.#write(action, payloads, false);
  }

  /** Stores a new action with its request in the queue; claims it for this server when `claim` and its model is free. */
  #write(action: Action, payloads: StoredPayloads | undefined, claim: boolean): Promise<bigint | undefined> {
    const previous = this.#pending.get(action.id);
    const merged = previous?.payloads || payloads ? { ...previous?.payloads, ...payloads } : undefined;
    const write: PendingWrite = { action, payloads: merged, claim: claim || (previous?.claim ?? false), settle: [] };
    const committed = new Promise<bigint | undefined>((resolve, reject) => write.settle.push({ resolve, reject }));
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
      const claimed = await this.#writeActions(writes);
      this.#o.onCommit?.((performance.now() - started) / 1000);
      for (const w of writes) for (const s of w.settle) s.resolve(claimed.get(w.action.id));
    } catch (error) {
      if (writes.length === 1 || PlinthError.is(error)) {
        for (const w of writes) for (const s of w.settle) s.reject(error);
        return;
      }
      // Which one failed? Each on its own: only the writes that fail alone fail.
      for (const w of writes) {
        try {
          const claimed = await this.#writeActions([w]);
          for (const s of w.settle) s.resolve(claimed.get(w.action.id));
        } catch (own) {
          for (const s of w.settle) s.reject(own);
        }
      }
    }
  }

  /** One call of plinth_write_actions: on the pool, or in a transaction when payloads go with it. */
  async #writeActions(writes: PendingWrite[]): Promise<Map<string, bigint>> {
    const written = writes.some((w) => w.payloads?.args || w.payloads?.prediction)
      ? await this.#transaction((client) => this.#writeActionsIn(client, writes))
      : this.#written(writes, (await this.#query<WriteResult>({ name: "plinth-write-actions", text: WRITE_CALL }, this.#writeParams(writes))).rows);
    this.#cluster.committed(written.first, written.changes);
    return written.claimed;
  }

  /** The writes, with their payloads, in the transaction of `client`. */
  async #writeActionsIn(client: pg.PoolClient, writes: ActionWrite[]): Promise<Written> {
    const call = { name: "plinth-write-actions", text: WRITE_CALL, values: this.#writeParams(writes) };
    const written = this.#written(writes, (await client.query<WriteResult>(call)).rows);
    for (const { action, payloads } of writes) {
      if (!payloads?.args && !payloads?.prediction) continue;
      const args = payloads.args ? Buffer.from(toBinary(ActionSchema, create(ActionSchema, payloads.args))) : null;
      const prediction = payloads.prediction ? Buffer.from(toBinary(ArgSchema, payloads.prediction)) : null;
      await client.query(
        `INSERT INTO action_payloads (action_id, args, prediction) VALUES ($1, $2, $3)
         ON CONFLICT (action_id) DO UPDATE SET args = coalesce(excluded.args, action_payloads.args),
           prediction = coalesce(excluded.prediction, action_payloads.prediction)`,
        [action.id, args, prediction],
      );
    }
    return written;
  }

  /** The parameters of plinth_write_actions (migration 4) for these writes. */
  #writeParams(writes: ActionWrite[]): unknown[] {
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
    // Fenced by this server's lease: new actions' requests go in the queue with them, and
    // those of the actions that ended go.
    const ended = writes.filter((w) => ENDED.includes(w.action.status)).map((w) => w.action.id);
    const kept = writes.filter((w) => w.payloads?.request && !ENDED.includes(w.action.status));
    // At most one new call per model claimed at once: the statement does not see its own rows.
    const claimedModels = new Set<string>();
    const claims = kept.map((w) => {
      const { modelId } = w.action;
      if (!w.claim || claimedModels.has(modelId)) return false;
      if (modelId) claimedModels.add(modelId);
      return true;
    });
    return [
      this.#cluster.server,
      ...[columns.id, columns.model, columns.status, columns.created, columns.ended, columns.by, columns.json],
      ended,
      kept.map((w) => w.action.id),
      kept.map((w) => Buffer.from(w.payloads!.request!.buffer, w.payloads!.request!.byteOffset, w.payloads!.request!.byteLength)),
      kept.map((w) => w.action.modelId),
      kept.map((w) => w.action.modelType),
      kept.map((w) => JSON.stringify([...new Set(w.action.dataAccess.map((d) => d.name))])),
      claims,
      // Only a new action or an end is waited on by a client: the steps between need not wait for the disk.
      writes.some((w) => w.payloads?.request !== undefined || ENDED.includes(w.action.status)),
    ];
  }

  /** What plinth_write_actions answered; a server whose lease is gone wrote nothing. */
  #written(writes: ActionWrite[], rows: WriteResult[]): Written {
    const result = rows[0];
    if (!result?.claimed) throw this.#fenced();
    const first = BigInt(result.first);
    const stored = new Set(result.written);
    return {
      claimed: new Map(result.claimed.map((id, i) => [id, BigInt(result.claimed_revisions[i]!)])),
      first,
      // An ended action is never written again: what the call kept as it was is no change.
      changes: writes.flatMap((w, i) =>
        stored.has(w.action.id) ? [{ revision: first + BigInt(i), kind: "action" as const, action: w.action }] : [],
      ),
    };
  }

  async settleEnd(action: Action): Promise<Action> {
    await this.putAction(action);
    return (await this.getAction(action.id))?.action ?? action;
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

  revisionMadeBy(action: Action): Promise<ModelMeta | undefined> {
    return revisionMadeBy((sql, params) => this.#query(sql, params), action);
  }

  async pruneActions(now: Date): Promise<number> {
    await this.#flush().catch(() => {});
    return this.#transaction(async (client) => {
      let removed =
        (await client.query("DELETE FROM actions WHERE end_time IS NOT NULL AND end_time < $1", [now.getTime() - this.#o.maxActionAgeMs])).rowCount ??
        0;
      // A deleted model's tombstone only serves servers catching up on the feed.
      await client.query("DELETE FROM model_tombstones WHERE deleted < now() - interval '1 day'");
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
      "INSERT INTO children (host, pid, start_ticks, server) VALUES ($1, $2, $3, $4) ON CONFLICT (host, pid) DO UPDATE SET start_ticks = excluded.start_ticks, server = excluded.server",
      [this.#host, child.pid, child.startTicks, this.#cluster.server],
    );
  }

  async untrackChild(pid: number): Promise<void> {
    await this.#query("DELETE FROM children WHERE host = $1 AND pid = $2", [this.#host, pid]);
  }

  /** The children recorded here by servers no longer in the cluster: the others' are theirs. */
  async trackedChildren(): Promise<TrackedChild[]> {
    const { rows } = await this.#query<{ pid: number; start_ticks: string }>(
      "SELECT pid, start_ticks FROM children WHERE host = $1 AND server NOT IN (SELECT server FROM plinth_servers)",
      [this.#host],
    );
    return rows.map((row) => ({ pid: row.pid, startTicks: row.start_ticks }));
  }

  async clearTrackedChildren(): Promise<void> {
    await this.#query("DELETE FROM children WHERE host = $1 AND server NOT IN (SELECT server FROM plinth_servers)", [this.#host]);
  }

  /** The marks (owner) of the servers in the cluster: their children are not orphans. */
  async liveOwners(): Promise<string[]> {
    const { rows } = await this.#query<{ server: string }>("SELECT server FROM plinth_servers");
    return rows.map((row) => `${this.id}.${row.server}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#flush().catch(() => {});
    await this.#cluster.close();
    this.#closed = true;
    await this.#pool.end().catch(() => {});
  }
}
