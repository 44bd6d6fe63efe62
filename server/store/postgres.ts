/**
 * The PostgreSQL store (node-postgres): the same contract as the SQLite store, for teams
 * that already run PostgreSQL — models with their kept revisions (instances as bytea),
 * the action history, the pids of live plugin children (per host).
 *
 * It reads and writes through the access layer it shares with the cluster (pg/): the
 * database (pool, fenced transactions, errors) and its writes (the group commit of
 * action changes, a model's next revision). Several servers may serve one database:
 * the cluster (server/cluster/) keeps each one's lease, which every write checks.
 */
import { hostname } from "node:os";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";
import type { PgDatabase } from "./pg/database.ts";
import { revisionMadeBy } from "./pg/revision-made-by.ts";
import type { PgWrites } from "./pg/writes.ts";
import {
  atRevision,
  bytesOf,
  callName,
  DEFAULT_PRIORITY,
  decodeAction,
  ENDED_STATUSES,
  jsonFilters,
  type ModelRow,
  modelMeta,
  type PayloadColumns,
  type RevisionRow,
  storedAction,
} from "./records.ts";
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

export interface PostgresOptions {
  /** Action history: at most this many finished actions... */
  maxActions: number;
  /** ...and none older than this. */
  maxActionAgeMs: number;
}

export class PostgresStore implements Store {
  readonly id: string;
  /** Children are marked per server: servers on one host tell their own from a dead one's. */
  readonly owner: string;
  readonly #db: PgDatabase;
  readonly #writes: PgWrites;
  readonly #o: PostgresOptions;
  readonly #host = hostname();

  constructor(db: PgDatabase, writes: PgWrites, options: PostgresOptions) {
    this.#db = db;
    this.#writes = writes;
    this.#o = options;
    this.id = db.id;
    this.owner = `${db.id}.${db.server}`;
  }

  // ---- models ----

  async getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined> {
    const { rows } = await this.#db.query<ModelRow & RevisionRow & { instance: Buffer }>(
      `SELECT m.*, r.instance, r.instance_size AS r_size, r.action_id AS r_action, r.create_time AS r_time, r.revision AS r_revision
       FROM models m JOIN model_revisions r ON r.model_id = m.id AND r.revision = coalesce($2::bigint, m.revision)
       WHERE m.id = $1`,
      [id, revision === undefined ? null : revision.toString()],
    );
    const row = rows[0];
    return row && atRevision(modelMeta(row), row, bytesOf(row.instance));
  }

  async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    return (await this.#writes.model(model, { ended }))!;
  }

  async deleteModel(id: string): Promise<boolean> {
    return this.#db.transaction(async (client) => {
      // Not while any server has a call on it queued or running, or an update waiting (as on one server).
      const { rows } = await client.query<{ deleted: string; busy: string }>(
        `WITH busy AS (SELECT (SELECT count(*) FROM action_requests WHERE model_id = $1) + (SELECT count(*) FROM queued_updates WHERE model_id = $1) AS n),
         gone AS (DELETE FROM models WHERE id = $1 AND (SELECT n FROM busy) = 0 RETURNING id)
         SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT n FROM busy) AS busy`,
        [id],
      );
      const busy = Number(rows[0]!.busy);
      if (busy > 0) {
        throw new PlinthError(
          "failed_precondition",
          `model ${id} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
        );
      }
      const deleted = Number(rows[0]!.deleted) > 0;
      if (!deleted) return false;
      await client.query(
        `INSERT INTO model_tombstones (id, change) VALUES ($1, nextval('plinth_change'))
         ON CONFLICT (id) DO UPDATE SET change = excluded.change, deleted = now()`,
        [id],
      );
      await client.query("SELECT pg_notify('plinth', 'c')");
      return true;
    });
  }

  async allModels(): Promise<ModelMeta[]> {
    return (await this.#db.query<ModelRow>("SELECT * FROM models ORDER BY id")).rows.map(modelMeta);
  }

  async listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelType) where.push(`model_type = $${params.push(query.modelType)}`);
    if (query.afterId) where.push(`id > $${params.push(query.afterId)}`);
    const sql = `SELECT * FROM models ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id LIMIT $${params.push(query.limit)}`;
    return (await this.#db.query<ModelRow>(sql, params)).rows.map(modelMeta);
  }

  // ---- actions ----

  /** The group commit (pg/writes.ts): the changes of one turn of the event loop in one statement. */
  /** Nothing lingers here: the other servers of the cluster see each change as it is made. */
  async putAction(action: Action, payloads?: StoredPayloads, _lingerMs?: number): Promise<void> {
    await this.#writes.action(action, payloads, false);
  }

  /** An ended action is never written again (plinth_write_actions): what is read back is what the store holds. */
  async settleEnd(action: Action): Promise<Action> {
    await this.putAction(action);
    return (await this.getAction(action.id))?.action ?? action;
  }

  async getAction(id: string, withPayloads = false): Promise<StoredAction | undefined> {
    await this.#writes.flush();
    const row = (await this.#db.query<{ id: string; json: string }>("SELECT id, json FROM actions WHERE id = $1", [id])).rows[0];
    if (!row) return undefined;
    return (await this.#stored([row], withPayloads))[0];
  }

  async #stored(rows: { id: string; json: string }[], withPayloads: boolean): Promise<StoredAction[]> {
    const kept = new Map<string, PayloadColumns>();
    if (withPayloads && rows.length > 0) {
      const { rows: payloadRows } = await this.#db.query<{ action_id: string } & PayloadColumns>(
        "SELECT action_id, args, prediction FROM action_payloads WHERE action_id = ANY($1::text[])",
        [rows.map((r) => r.id)],
      );
      for (const p of payloadRows) kept.set(p.action_id, p);
    }
    return rows.map((row) => storedAction(row.json, kept.get(row.id)));
  }

  async listActions(query: ListActionsQuery, withPayloads = false): Promise<StoredAction[]> {
    await this.#writes.flush();
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.modelId) where.push(`model_id = $${params.push(query.modelId)}`);
    if (query.statuses?.length) where.push(`status = ANY($${params.push(query.statuses)}::integer[])`);
    if (query.beforeId) where.push(`id < $${params.push(query.beforeId)}`);
    if (query.createdAfter) where.push(`create_time >= $${params.push(query.createdAfter.getTime())}`);
    if (query.createdBefore) where.push(`create_time < $${params.push(query.createdBefore.getTime())}`);
    if (query.createdBy) where.push(`created_by = $${params.push(query.createdBy)}`);
    // Read from the action's JSON, not indexed: a filter beside the others, on a page read newest first.
    if (query.priority) where.push(`coalesce((json::json ->> 'priority')::integer, ${DEFAULT_PRIORITY}) = $${params.push(query.priority)}`);
    for (const [path, value] of jsonFilters(query)) where.push(`json::json #>> '{${path.replace(".", ",")}}' = $${params.push(value)}`);
    if (query.calls?.length) where.push(`json::json ->> 'call' = ANY($${params.push(query.calls.map((c) => callName(c)))}::text[])`);
    const sql = `SELECT id, json FROM actions ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.push(query.limit)}`;
    return this.#stored((await this.#db.query<{ id: string; json: string }>(sql, params)).rows, withPayloads);
  }

  async unfinishedActions(): Promise<Action[]> {
    await this.#writes.flush();
    const { rows } = await this.#db.query<{ json: string }>("SELECT json FROM actions WHERE NOT (status = ANY($1::integer[])) ORDER BY id", [
      ENDED_STATUSES,
    ]);
    return rows.map((row) => decodeAction(row.json));
  }

  async pendingRequest(actionId: string): Promise<PendingRequest> {
    await this.#writes.flush();
    const { rows } = await this.#db.query<{ request: Buffer | null; checkpoint: Buffer | null }>(
      "SELECT request, checkpoint FROM action_requests WHERE action_id = $1",
      [actionId],
    );
    return { request: rows[0]?.request ?? undefined, checkpoint: rows[0]?.checkpoint ?? undefined };
  }

  revisionMadeBy(action: Action): Promise<ModelMeta | undefined> {
    return revisionMadeBy((sql, params) => this.#db.query(sql, params), action);
  }

  async pruneActions(now: Date): Promise<number> {
    await this.#writes.flush();
    return this.#db.transaction(async (client) => {
      let removed =
        (await client.query("DELETE FROM actions WHERE end_time IS NOT NULL AND end_time < $1", [now.getTime() - this.#o.maxActionAgeMs])).rowCount ??
        0;
      // Request ids of calls that start no action, and claims whose action was never stored.
      await client.query("DELETE FROM request_ids WHERE create_time < $1 AND action_id NOT IN (SELECT id FROM actions)", [
        now.getTime() - this.#o.maxActionAgeMs,
      ]);
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

  // ---- request ids ----

  async claimRequest(claim: RequestClaim, now: Date): Promise<RequestClaim | undefined> {
    // This server's pending writes may hold the claim's action.
    await this.#writes.flush();
    // Under the write lock: the servers claim one at a time.
    return this.#db.transaction(async (client) => {
      const { rows } = await client.query<{ fingerprint: string; action_id: string; create_time: string; outcome: string; stored: boolean }>(
        `SELECT r.fingerprint, r.action_id, r.create_time, r.outcome,
           r.outcome <> '' OR EXISTS (SELECT 1 FROM actions a WHERE a.id = r.action_id) AS stored
         FROM request_ids r WHERE r.created_by = $1 AND r.request_id = $2`,
        [claim.createdBy, claim.requestId],
      );
      const held = rows[0];
      if (held && (held.stored || Number(held.create_time) >= now.getTime() - STALE_CLAIM_MS)) {
        return {
          createdBy: claim.createdBy,
          requestId: claim.requestId,
          fingerprint: held.fingerprint,
          actionId: held.action_id,
          outcome: held.outcome,
        };
      }
      await client.query(
        `INSERT INTO request_ids (created_by, request_id, fingerprint, action_id, create_time) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (created_by, request_id) DO UPDATE SET fingerprint = excluded.fingerprint, action_id = excluded.action_id,
           create_time = excluded.create_time, outcome = ''`,
        [claim.createdBy, claim.requestId, claim.fingerprint, claim.actionId, now.getTime()],
      );
      return undefined;
    });
  }

  async releaseRequest(claim: RequestClaim): Promise<void> {
    await this.#db.transaction(async (client) => {
      await client.query("DELETE FROM request_ids WHERE created_by = $1 AND request_id = $2 AND action_id = $3", [
        claim.createdBy,
        claim.requestId,
        claim.actionId,
      ]);
    });
  }

  async settleRequest(claim: RequestClaim, outcome: string): Promise<void> {
    await this.#db.transaction(async (client) => {
      await client.query("UPDATE request_ids SET outcome = $1 WHERE created_by = $2 AND request_id = $3 AND action_id = $4", [
        outcome,
        claim.createdBy,
        claim.requestId,
        claim.actionId,
      ]);
    });
  }

  // ---- children (per host: a pid means something only on its own machine) ----

  async trackChild(child: TrackedChild): Promise<void> {
    await this.#db.query(
      "INSERT INTO children (host, pid, start_ticks, server) VALUES ($1, $2, $3, $4) ON CONFLICT (host, pid) DO UPDATE SET start_ticks = excluded.start_ticks, server = excluded.server",
      [this.#host, child.pid, child.startTicks, this.#db.server],
    );
  }

  async untrackChild(pid: number): Promise<void> {
    await this.#db.query("DELETE FROM children WHERE host = $1 AND pid = $2", [this.#host, pid]);
  }

  /** The children recorded here by servers no longer in the cluster: the others' are theirs. */
  async trackedChildren(): Promise<TrackedChild[]> {
    const { rows } = await this.#db.query<{ pid: number; start_ticks: string }>(
      "SELECT pid, start_ticks FROM children WHERE host = $1 AND server NOT IN (SELECT server FROM plinth_servers)",
      [this.#host],
    );
    return rows.map((row) => ({ pid: row.pid, startTicks: row.start_ticks }));
  }

  async clearTrackedChildren(): Promise<void> {
    await this.#db.query("DELETE FROM children WHERE host = $1 AND server NOT IN (SELECT server FROM plinth_servers)", [this.#host]);
  }

  /** The marks (owner) of the servers in the cluster: their children are not orphans. */
  async liveOwners(): Promise<string[]> {
    const { rows } = await this.#db.query<{ server: string }>("SELECT server FROM plinth_servers");
    return rows.map((row) => `${this.id}.${row.server}`);
  }

  /** Commits what is pending, then closes the database (the cluster leaves it first). */
  async close(): Promise<void> {
    await this.#writes.flush();
    await this.#db.close();
  }
}
