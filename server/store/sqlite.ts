/**
 * The SQLite store (better-sqlite3): models with their kept revisions, the action
 * history, and the pids of live plugin children (to reap them after a crash).
 *
 * WAL journal, one transaction per state change, schema migrations applied at open.
 * With synchronous=NORMAL (the default) a committed change survives the server being
 * killed; synchronous=FULL also survives losing power, at an fsync per change.
 */
import { once } from "node:events";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";
import { PLINTH_DIR } from "../package-root.ts";
import { randomHex, runId } from "../run-id.ts";
import { type ActionWrite, Batcher } from "./batcher.ts";
import { migrate } from "./migrations.ts";
import {
  actionColumns,
  atRevision,
  bytesOf,
  callName,
  DEFAULT_PRIORITY,
  decodeAction,
  ENDED_STATUSES,
  encodePayloads,
  hasKeptPayloads,
  isEnded,
  jsonFilters,
  type MadeRow,
  type ModelRow,
  madeRevision,
  metaOf,
  modelMeta,
  type PayloadColumns,
  type RevisionRow,
  storedAction,
  withKeptRevisions,
} from "./records.ts";
import { lockDatabase, thisHolder } from "./sqlite-lock.ts";
import type {
  EndedWith,
  ListActionsQuery,
  ListModelsQuery,
  ModelMeta,
  ModelRecord,
  PendingRequest,
  RequestClaim,
  Store,
  StoredAction,
  StoredPayloads,
  TrackedChild,
} from "./store.ts";
import { STALE_CLAIM_MS } from "./store.ts";
import { revisionCommitted } from "./test-stop.ts";

export interface SqliteOptions {
  path: string;
  synchronous: "normal" | "full";
  /** Revisions kept per model, the latest included. */
  keepRevisions: number;
  /** Action history: at most this many finished actions... */
  maxActions: number;
  /** ...and none older than this. */
  maxActionAgeMs: number;
  /** Refuse writes once the database file would grow past this (SQLITE_FULL). */
  maxSizeBytes?: number | undefined;
  /** Told how long each commit of action changes took: for metrics. */
  onCommit?: ((seconds: number) => void) | undefined;
}

/** How often the WAL is checkpointed into the database file. */
const CHECKPOINT_PERIOD_MS = 1000;

/** Turns SQLite's failures into errors that say what to fix. */
function explain(error: unknown, path: string): unknown {
  const code = (error as { code?: string }).code ?? "";
  const message = (error as Error).message;
  if (code === "SQLITE_FULL") {
    return new PlinthError("queue_full", `the store is full (${path}): ${message}; free disk space or raise backend.max_size_mb`, { cause: error });
  }
  if (code === "SQLITE_READONLY" || code.startsWith("SQLITE_READONLY")) {
    return new PlinthError("unavailable", `the store ${path} is read-only: ${message}`, { cause: error });
  }
  if (code === "SQLITE_IOERR" || code.startsWith("SQLITE_IOERR")) {
    return new PlinthError("unavailable", `the store ${path} failed to write: ${message}`, { cause: error });
  }
  if (code === "SQLITE_CORRUPT") return damaged(path, message);
  return error;
}

/** A database SQLite finds malformed: what to do about it. */
function damaged(path: string, message: string): PlinthError {
  return new PlinthError(
    "invalid_argument",
    `config backend.path: ${path} is damaged (${message}); stop the server, restore the file from a backup (see "Where data lives, backups, restarts" in the README), or move it and its -wal and -shm files away to start with an empty database`,
  );
}

/** The database's own id, made once: the plugin children of its servers carry it. */
function storeId(db: Database.Database): string {
  const row = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'id'").get();
  if (row) return row.value;
  const id = randomHex(6);
  db.prepare("INSERT INTO meta (key, value) VALUES ('id', ?)").run(id);
  return id;
}

export class SqliteStore implements Store {
  readonly id: string;
  readonly owner: string;
  readonly #db: Database.Database;
  /** Held while this server runs: see sqlite-lock.ts. */
  readonly #lock: Database.Database;
  readonly #o: SqliteOptions;
  readonly #q;
  readonly #checkpointer: Worker;
  /** Action changes waiting for this turn's commit: committed synchronously, as SQLite does. */
  readonly #writes: Batcher;
  #closed = false;

  constructor(options: SqliteOptions) {
    this.#o = options;
    const { path } = options;
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch (error) {
      throw new PlinthError("invalid_argument", `config backend.path: cannot create the folder of ${path}: ${(error as Error).message}`);
    }
    let lock: Database.Database | undefined;
    let db: Database.Database | undefined;
    try {
      // One live server per database: refuse before touching it.
      lock = lockDatabase(path);
      db = new Database(path);
      db.pragma("journal_mode = WAL");
      db.pragma(`synchronous = ${options.synchronous.toUpperCase()}`);
      db.pragma("foreign_keys = ON");
      if (options.maxSizeBytes !== undefined) {
        const pageSize = Number(db.pragma("page_size", { simple: true }));
        db.pragma(`max_page_count = ${Math.max(1, Math.floor(options.maxSizeBytes / pageSize))}`);
      }
      migrate(db, path);
      this.id = storeId(db);
      db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('holder', ?)").run(JSON.stringify(thisHolder()));
    } catch (error) {
      db?.close();
      lock?.close();
      if (PlinthError.is(error)) throw error;
      const code = (error as { code?: string }).code ?? "";
      const message = (error as Error).message;
      if (code === "SQLITE_CORRUPT") throw damaged(path, message);
      if (code === "SQLITE_NOTADB") {
        throw new PlinthError(
          "invalid_argument",
          `config backend.path: ${path} is not a SQLite database (${message}); point backend.path at a Plinth database or at a new file`,
        );
      }
      if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_READONLY") || code.startsWith("SQLITE_PERM")) {
        throw new PlinthError(
          "invalid_argument",
          `config backend.path: cannot open ${path} for writing (${message}); check that its folder exists and is writable`,
        );
      }
      if (code === "SQLITE_FULL") {
        throw new PlinthError("invalid_argument", `config backend.path: no space to open ${path} (${message}); free disk space`);
      }
      throw error;
    }
    this.#db = db;
    this.#lock = lock!;
    this.owner = `${this.id}.${runId()}`;
    this.#q = this.#statements();
    this.#writes = new Batcher({ commit: (writes) => this.#commit(writes), onCommit: options.onCommit });
    // Checkpoints (with their fsync) run in a worker thread, off the event loop.
    db.pragma("wal_autocheckpoint = 0");
    this.#checkpointer = new Worker(join(PLINTH_DIR, "server/store/checkpointer.mjs"), {
      workerData: { path, periodMs: CHECKPOINT_PERIOD_MS },
    });
    this.#checkpointer.unref();
    // Should the thread die, SQLite checkpoints on its own again, on the event loop.
    this.#checkpointer.on("error", () => {
      if (!this.#closed) db.pragma("wal_autocheckpoint = 1000");
    });
  }

  #statements() {
    const db = this.#db;
    return {
      modelMeta: db.prepare<[string], ModelRow>("SELECT * FROM models WHERE id = ?"),
      revision: db.prepare<[string, bigint], RevisionRow & { instance: Buffer }>(
        `SELECT instance, revision AS r_revision, create_time AS r_time, instance_size AS r_size, action_id AS r_action
         FROM model_revisions WHERE model_id = ? AND revision = ?`,
      ),
      upsertModel: db.prepare(
        `INSERT INTO models (id, model_type, revision, oldest_revision, create_time, update_time, instance_size, action_id)
         VALUES (@id, @model_type, @revision, @oldest_revision, @create_time, @update_time, @instance_size, @action_id)
         ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, oldest_revision = excluded.oldest_revision,
           update_time = excluded.update_time, instance_size = excluded.instance_size, action_id = excluded.action_id`,
      ),
      insertRevision: db.prepare(
        `INSERT OR REPLACE INTO model_revisions (model_id, revision, instance, instance_size, action_id, create_time)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      pruneRevisions: db.prepare("DELETE FROM model_revisions WHERE model_id = ? AND revision < ?"),
      deleteModel: db.prepare("DELETE FROM models WHERE id = ?"),
      allModels: db.prepare<[], ModelRow>("SELECT * FROM models ORDER BY id"),
      putAction: db.prepare(
        `INSERT INTO actions (id, model_id, status, create_time, end_time, json, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET model_id = excluded.model_id, status = excluded.status,
           end_time = excluded.end_time, json = excluded.json`,
      ),
      putPayloads: db.prepare(
        `INSERT INTO action_payloads (action_id, args, prediction) VALUES (?, ?, ?)
         ON CONFLICT (action_id) DO UPDATE SET args = coalesce(excluded.args, args), prediction = coalesce(excluded.prediction, prediction)`,
      ),
      keepRequest: db.prepare(
        `INSERT INTO action_requests (action_id, request, checkpoint) VALUES (?, ?, ?)
         ON CONFLICT (action_id) DO UPDATE SET request = coalesce(excluded.request, request), checkpoint = coalesce(excluded.checkpoint, checkpoint)`,
      ),
      dropRequest: db.prepare("DELETE FROM action_requests WHERE action_id = ?"),
      pendingRequest: db.prepare<[string], { request: Uint8Array | null; checkpoint: Uint8Array | null }>(
        "SELECT request, checkpoint FROM action_requests WHERE action_id = ?",
      ),
      getAction: db.prepare<[string], { json: string }>("SELECT json FROM actions WHERE id = ?"),
      getPayloads: db.prepare<[string], PayloadColumns>("SELECT args, prediction FROM action_payloads WHERE action_id = ?"),
      unfinished: db.prepare<[], { json: string }>(`SELECT json FROM actions WHERE status NOT IN (${ENDED_STATUSES.join(",")})`),
      // A new model's id is found by the action that made it (its revision 1).
      revisionMadeBy: db.prepare<{ action: string; model: string }, MadeRow>(
        `SELECT m.*, r.revision AS made_revision, r.create_time AS made_time, r.instance_size AS made_size
         FROM models m JOIN model_revisions r ON r.model_id = m.id
         WHERE r.action_id = @action AND m.id = coalesce(nullif(@model, ''), (SELECT id FROM models WHERE action_id = @action))`,
      ),
      pruneByAge: db.prepare("DELETE FROM actions WHERE end_time IS NOT NULL AND end_time < ?"),
      countFinished: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM actions WHERE end_time IS NOT NULL"),
      pruneByCount: db.prepare("DELETE FROM actions WHERE id IN (SELECT id FROM actions WHERE end_time IS NOT NULL ORDER BY id LIMIT ?)"),
      heldRequest: db.prepare<[string, string], RequestRow>(
        `SELECT r.*, r.outcome <> '' OR EXISTS (SELECT 1 FROM actions a WHERE a.id = r.action_id) AS stored
         FROM request_ids r WHERE r.created_by = ? AND r.request_id = ?`,
      ),
      claimRequest: db.prepare(
        `INSERT INTO request_ids (created_by, request_id, fingerprint, action_id, create_time) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (created_by, request_id) DO UPDATE SET fingerprint = excluded.fingerprint, action_id = excluded.action_id,
           create_time = excluded.create_time, outcome = ''`,
      ),
      settleRequest: db.prepare("UPDATE request_ids SET outcome = ? WHERE created_by = ? AND request_id = ? AND action_id = ?"),
      // Those of calls that start no action, and claims whose action was never stored.
      pruneRequests: db.prepare("DELETE FROM request_ids WHERE create_time < ? AND action_id NOT IN (SELECT id FROM actions)"),
      releaseRequest: db.prepare("DELETE FROM request_ids WHERE created_by = ? AND request_id = ? AND action_id = ?"),
      trackChild: db.prepare("INSERT OR REPLACE INTO children (pid, start_ticks) VALUES (?, ?)"),
      untrackChild: db.prepare("DELETE FROM children WHERE pid = ?"),
      children: db.prepare<[], { pid: number; start_ticks: string }>("SELECT pid, start_ticks FROM children"),
      clearChildren: db.prepare("DELETE FROM children"),
    };
  }

  /** Runs a read, turning a damaged file into a clear error. */
  #read<T>(fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw explain(error, this.#o.path);
    }
  }

  /** Runs a write, turning SQLite's failures into clear errors. */
  #write<T>(fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw explain(error, this.#o.path);
    }
  }

  async getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined> {
    const row = this.#q.modelMeta.get(id);
    if (!row) return undefined;
    const latest = modelMeta(row);
    const rev = this.#q.revision.get(id, revision ?? latest.revision);
    return rev && atRevision(latest, rev, bytesOf(rev.instance));
  }

  async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    const stored = withKeptRevisions(model, this.#o.keepRevisions);
    const { instance } = stored;
    const meta = metaOf(stored);
    const end = ended?.(meta);
    // The action's earlier changes go first: its end comes after them.
    if (end) this.#flush();
    this.#write(() =>
      this.#db.transaction(() => {
        this.#q.upsertModel.run({
          id: stored.id,
          model_type: stored.modelType,
          revision: stored.revision,
          oldest_revision: stored.oldestRevision,
          create_time: stored.createTime.getTime(),
          update_time: stored.updateTime.getTime(),
          instance_size: instance.byteLength,
          action_id: stored.actionId,
        });
        this.#q.insertRevision.run(
          stored.id,
          stored.revision,
          Buffer.from(instance.buffer, instance.byteOffset, instance.byteLength),
          instance.byteLength,
          stored.actionId,
          stored.updateTime.getTime(),
        );
        this.#q.pruneRevisions.run(stored.id, stored.oldestRevision);
        if (end) this.#writeAction({ ...end, claim: false });
      })(),
    );
    revisionCommitted(stored.revision);
    return meta;
  }

  async deleteModel(id: string): Promise<boolean> {
    // model_revisions rows go with it (ON DELETE CASCADE).
    return this.#write(() => this.#q.deleteModel.run(id).changes > 0);
  }

  async allModels(): Promise<ModelMeta[]> {
    return this.#read(() => this.#q.allModels.all().map(modelMeta));
  }

  async listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelType) {
      where.push("model_type = ?");
      params.push(query.modelType);
    }
    if (query.afterId) {
      where.push("id > ?");
      params.push(query.afterId);
    }
    const sql = `SELECT * FROM models ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id LIMIT ?`;
    return this.#db
      .prepare<unknown[], ModelRow>(sql)
      .all(...params, query.limit)
      .map(modelMeta);
  }

  /** The group commit (batcher.ts): the changes of one turn of the event loop in one transaction. */
  putAction(action: Action, payloads?: StoredPayloads, lingerMs = 0): Promise<void> {
    return this.#writes.add(action, payloads, false, lingerMs);
  }

  /**
   * Commits what is pending. SQLite's commit is synchronous, and so is the flush: what
   * the caller does next (a read, a transaction) comes after it, with nothing between.
   */
  #flush(): void {
    void this.#writes.flush();
  }

  #commit(writes: ActionWrite[]): undefined {
    if (this.#closed) throw new PlinthError("unavailable", `the store ${this.#o.path} is closed`);
    this.#write(
      this.#db.transaction(() => {
        for (const w of writes) this.#writeAction(w);
      }),
    );
    return undefined;
  }

  #writeAction({ action, payloads }: ActionWrite): void {
    const a = actionColumns(action);
    this.#q.putAction.run(a.id, a.model_id, a.status, a.create_time, a.end_time, a.json, a.created_by);
    if (payloads && hasKeptPayloads(payloads)) {
      const { args, prediction } = encodePayloads(payloads);
      this.#q.putPayloads.run(action.id, args, prediction);
    }
    // Kept only while the action may run again.
    if (isEnded(action)) this.#q.dropRequest.run(action.id);
    else if (payloads?.request || payloads?.checkpoint) {
      this.#q.keepRequest.run(action.id, payloads.request ?? null, payloads.checkpoint ?? null);
    }
  }

  async getAction(id: string, withPayloads = false): Promise<StoredAction | undefined> {
    this.#flush();
    const row = this.#q.getAction.get(id);
    return row && this.#stored(id, row.json, withPayloads);
  }

  async settleEnd(action: Action): Promise<Action> {
    this.#flush();
    return this.#write(() =>
      this.#db.transaction(() => {
        const row = this.#q.getAction.get(action.id);
        const held = row && decodeAction(row.json);
        if (held && isEnded(held)) return held;
        this.#writeAction({ action, claim: false });
        return action;
      })(),
    );
  }

  #stored(id: string, json: string, withPayloads: boolean): StoredAction {
    return storedAction(json, withPayloads ? this.#q.getPayloads.get(id) : undefined);
  }

  async listActions(query: ListActionsQuery, withPayloads = false): Promise<StoredAction[]> {
    this.#flush();
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelId) {
      where.push("model_id = ?");
      params.push(query.modelId);
    }
    if (query.statuses?.length) {
      where.push(`status IN (${query.statuses.map(() => "?").join(",")})`);
      params.push(...query.statuses);
    }
    if (query.beforeId) {
      where.push("id < ?");
      params.push(query.beforeId);
    }
    if (query.createdAfter) {
      where.push("create_time >= ?");
      params.push(query.createdAfter.getTime());
    }
    if (query.createdBefore) {
      where.push("create_time < ?");
      params.push(query.createdBefore.getTime());
    }
    if (query.createdBy) {
      where.push("created_by = ?");
      params.push(query.createdBy);
    }
    // Read from the action's JSON, not indexed: a filter beside the others, on a page read newest first.
    if (query.priority) {
      where.push(`coalesce(json_extract(json, '$.priority'), ${DEFAULT_PRIORITY}) = ?`);
      params.push(query.priority);
    }
    for (const [path, value] of jsonFilters(query)) {
      where.push(`json_extract(json, '$.${path}') = ?`);
      params.push(value);
    }
    if (query.calls?.length) {
      where.push(`json_extract(json, '$.call') IN (${query.calls.map(() => "?").join(",")})`);
      params.push(...query.calls.map((c) => callName(c)));
    }
    const sql = `SELECT id, json FROM actions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ?`;
    return this.#db
      .prepare<unknown[], { id: string; json: string }>(sql)
      .all(...params, query.limit)
      .map((row) => this.#stored(row.id, row.json, withPayloads));
  }

  async unfinishedActions(): Promise<Action[]> {
    this.#flush();
    return this.#read(() => this.#q.unfinished.all().map((row) => decodeAction(row.json)));
  }

  async pendingRequest(actionId: string): Promise<PendingRequest> {
    this.#flush();
    const row = this.#read(() => this.#q.pendingRequest.get(actionId));
    return { request: row?.request ?? undefined, checkpoint: row?.checkpoint ?? undefined };
  }

  async revisionMadeBy(action: Action): Promise<ModelMeta | undefined> {
    if (action.status !== ActionStatus.STORING) return undefined;
    const row = this.#read(() => this.#q.revisionMadeBy.get({ action: action.id, model: action.modelId }));
    return row && madeRevision(row, action.id);
  }

  async pruneActions(now: Date): Promise<number> {
    this.#flush();
    return this.#write(() =>
      this.#db.transaction(() => {
        let removed = this.#q.pruneByAge.run(now.getTime() - this.#o.maxActionAgeMs).changes;
        const excess = this.#q.countFinished.get()!.n - this.#o.maxActions;
        if (excess > 0) removed += this.#q.pruneByCount.run(excess).changes;
        this.#q.pruneRequests.run(now.getTime() - this.#o.maxActionAgeMs);
        return removed;
      })(),
    );
  }

  async claimRequest(claim: RequestClaim, now: Date): Promise<RequestClaim | undefined> {
    // The claim's action may be in the batch still: it counts as stored.
    this.#flush();
    return this.#write(() =>
      this.#db.transaction(() => {
        const held = this.#q.heldRequest.get(claim.createdBy, claim.requestId);
        if (held && (held.stored || held.create_time >= now.getTime() - STALE_CLAIM_MS)) return claimOf(held);
        this.#q.claimRequest.run(claim.createdBy, claim.requestId, claim.fingerprint, claim.actionId, now.getTime());
        return undefined;
      })(),
    );
  }

  async releaseRequest(claim: RequestClaim): Promise<void> {
    this.#write(() => this.#q.releaseRequest.run(claim.createdBy, claim.requestId, claim.actionId));
  }

  async settleRequest(claim: RequestClaim, outcome: string): Promise<void> {
    this.#write(() => this.#q.settleRequest.run(outcome, claim.createdBy, claim.requestId, claim.actionId));
  }

  async trackChild(child: TrackedChild): Promise<void> {
    this.#write(() => this.#q.trackChild.run(child.pid, child.startTicks));
  }

  async untrackChild(pid: number): Promise<void> {
    this.#write(() => this.#q.untrackChild.run(pid));
  }

  async trackedChildren(): Promise<TrackedChild[]> {
    return this.#q.children.all().map((row) => ({ pid: row.pid, startTicks: row.start_ticks }));
  }

  async clearTrackedChildren(): Promise<void> {
    this.#write(() => this.#q.clearChildren.run());
  }

  /** Checks the database file: "ok" when sound. */
  integrityCheck(): string {
    return String(this.#db.pragma("integrity_check", { simple: true }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    if (this.#checkpointer.threadId !== -1) {
      // Keep the process alive until the last checkpoint is written.
      this.#checkpointer.ref();
      const exited = once(this.#checkpointer, "exit");
      this.#checkpointer.postMessage("close");
      await exited;
    }
    this.#db.close();
    this.#lock.close();
  }
}

interface RequestRow {
  created_by: string;
  request_id: string;
  fingerprint: string;
  action_id: string;
  create_time: number;
  outcome: string;
  stored: number;
}

function claimOf(row: RequestRow): RequestClaim {
  return { createdBy: row.created_by, requestId: row.request_id, fingerprint: row.fingerprint, actionId: row.action_id, outcome: row.outcome };
}
