/**
 * The writes of models and actions to PostgreSQL, shared by the store and the cluster:
 * the group commit of action changes (one call of plinth_write_actions per event-loop
 * turn, new actions entering the queue and claimed with it), and a model's next revision
 * (with the end of the action that made it, in the same transaction).
 *
 * Each commit's revisions are told as `committed`: the server that made them applies its
 * own changes without reading them back.
 */
import { EventEmitter } from "node:events";
import type pg from "pg";
import { type Action, ActionCall } from "../../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../../errors.ts";
import { type ActionWrite, Batcher } from "../batcher.ts";
import { actionColumns, encodePayloads, hasKeptPayloads, isEnded, metaOf, withKeptRevisions } from "../records.ts";
import type { EndedWith, ModelMeta, ModelRecord, StoredPayloads } from "../store.ts";
import { revisionCommitted } from "../test-stop.ts";
import type { PgDatabase } from "./database.ts";

export interface PgWritesOptions {
  /** Revisions kept per model, the latest included. */
  keepRevisions: number;
  /** Told how long each commit of action changes took: for metrics. */
  onCommit?: ((seconds: number) => void) | undefined;
}

/** An action's change as stored, under the revision the database gave it. */
export interface CommittedAction {
  revision: bigint;
  action: Action;
}

export interface PgWritesEvents {
  /** This server's action changes committed, from revision `first` on (ended actions not written again left out). */
  committed: [first: bigint, actions: CommittedAction[]];
}

/** What plinth_write_actions answers: nothing (nulls) when this server's lease is gone. */
interface WriteResult {
  claimed: string[] | null;
  claimed_revisions: string[];
  first: string;
  written: string[];
}

/** The call of the group commit (migration 5): one statement, one round trip. */
const WRITE_CALL = `SELECT * FROM plinth_write_actions($1, $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::bigint[], $7::text[], $8::text[],
   $9::text[], $10::text[], $11::bytea[], $12::text[], $13::text[], $14::text[], $15::boolean[], $16::boolean[], $17::boolean)`;

/** What a write stored: the claims made, and the changes committed, with their revisions. */
interface Written {
  claimed: Map<string, bigint>;
  first: bigint;
  actions: CommittedAction[];
}

const buffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

export class PgWrites {
  readonly events = new EventEmitter<PgWritesEvents>();
  readonly #db: PgDatabase;
  readonly #o: PgWritesOptions;
  /** Resolves each write with its model's revision when this server claimed the action. */
  readonly #batch: Batcher<bigint>;

  constructor(db: PgDatabase, options: PgWritesOptions) {
    this.#db = db;
    this.#o = options;
    this.#batch = new Batcher<bigint>({
      commit: (writes) => this.#writeActions(writes),
      // A lost database or a lost lease fails every write alike: no use trying each.
      split: (error) => !PlinthError.is(error),
      onCommit: options.onCommit,
    });
  }

  /**
   * Adds an action's change to this turn's commit. A new action comes with its whole
   * request (payloads.request): it enters the queue, and with `claim` it is this
   * server's at once when its model is free; resolves with its model's revision (0
   * without a model) when it is, undefined otherwise.
   */
  action(action: Action, payloads: StoredPayloads | undefined, claim: boolean): Promise<bigint | undefined> {
    return this.#batch.add(action, payloads, claim);
  }

  /** Commits what is pending; reads wait for it, so that they see every change made before them. */
  flush(): Promise<void> {
    return this.#batch.flush();
  }

  /**
   * Stores the model's next revision (dropping revisions beyond the kept count), with the
   * end of the action that made it when `ended`. With `update` (its place in the model's
   * queue, queued_updates): only once nothing queued before it is left and no call on the
   * model is claimed, taking it out of the queue; undefined while one is.
   */
  async model(model: ModelRecord, { ended, update }: { ended?: EndedWith | undefined; update?: string | undefined }): Promise<ModelMeta | undefined> {
    const stored = withKeptRevisions(model, this.#o.keepRevisions);
    const meta = metaOf(stored);
    const instance = buffer(stored.instance);
    const end = ended?.(meta);
    const outcome = await this.#db.transaction(async (client) => {
      if (update !== undefined) {
        const { rows } = await client.query<{ turn: boolean }>(
          `SELECT NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = u.model_id AND (e.owner IS NOT NULL OR e.seq < u.seq))
             AND NOT EXISTS (SELECT 1 FROM queued_updates v WHERE v.model_id = u.model_id AND v.seq < u.seq) AS turn
           FROM queued_updates u WHERE u.id = $1`,
          [update],
        );
        if (!rows[0]) throw new PlinthError("internal", `the update of model ${stored.id} lost its place in the model's queue`);
        if (!rows[0].turn) return undefined;
        await client.query("DELETE FROM queued_updates WHERE id = $1", [update]);
        // The calls queued behind it may go.
        await client.query("SELECT pg_notify('plinth', 'w')");
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
      if (written && written.actions.length === 0) {
        throw new PlinthError(
          "failed_precondition",
          `action ${end!.action.id} had ended already (another server ended it): its revision is not stored`,
        );
      }
      await client.query("SELECT pg_notify('plinth', 'c')");
      return { written };
    });
    if (!outcome) return undefined;
    if (outcome.written) this.events.emit("committed", outcome.written.first, outcome.written.actions);
    revisionCommitted(stored.revision);
    return meta;
  }

  /** One call of plinth_write_actions: on the pool, or in a transaction when payloads go with it. */
  async #writeActions(writes: ActionWrite[]): Promise<Map<string, bigint>> {
    const written = writes.some((w) => hasKeptPayloads(w.payloads) || w.payloads?.checkpoint)
      ? await this.#db.transaction((client) => this.#writeActionsIn(client, writes))
      : this.#written(writes, (await this.#db.query<WriteResult>({ name: "plinth-write-actions", text: WRITE_CALL }, this.#params(writes))).rows);
    this.events.emit("committed", written.first, written.actions);
    return written.claimed;
  }

  /** The writes, with their payloads, in the transaction of `client`. */
  async #writeActionsIn(client: pg.PoolClient, writes: ActionWrite[]): Promise<Written> {
    const call = { name: "plinth-write-actions", text: WRITE_CALL, values: this.#params(writes) };
    const written = this.#written(writes, (await client.query<WriteResult>(call)).rows);
    for (const { action, payloads } of writes) {
      // The checkpoint goes with the action's queue entry: the server that runs its next attempt reads it there.
      if (payloads?.checkpoint && !isEnded(action)) {
        await client.query("UPDATE action_requests SET checkpoint = $2 WHERE action_id = $1", [action.id, buffer(payloads.checkpoint)]);
      }
      if (!payloads || !hasKeptPayloads(payloads)) continue;
      const { args, prediction } = encodePayloads(payloads);
      await client.query(
        `INSERT INTO action_payloads (action_id, args, prediction) VALUES ($1, $2, $3)
         ON CONFLICT (action_id) DO UPDATE SET args = coalesce(excluded.args, action_payloads.args),
           prediction = coalesce(excluded.prediction, action_payloads.prediction)`,
        [action.id, args && buffer(args), prediction && buffer(prediction)],
      );
    }
    return written;
  }

  /** The parameters of plinth_write_actions (migration 5) for these writes. */
  #params(writes: ActionWrite[]): unknown[] {
    const columns = writes.map((w) => actionColumns(w.action));
    // Fenced by this server's lease: new actions' requests go in the queue with them, and
    // those of the actions that ended go. The function decides which new calls this server
    // claims (several on one model only when they run shared), and which predicts are shared.
    const ended = writes.filter((w) => isEnded(w.action)).map((w) => w.action.id);
    const kept = writes.filter((w) => w.payloads?.request && !isEnded(w.action));
    return [
      this.#db.server,
      columns.map((c) => c.id),
      columns.map((c) => c.model_id),
      columns.map((c) => c.status),
      columns.map((c) => c.create_time),
      columns.map((c) => c.end_time),
      columns.map((c) => c.created_by),
      columns.map((c) => c.json),
      ended,
      kept.map((w) => w.action.id),
      kept.map((w) => buffer(w.payloads!.request!)),
      kept.map((w) => w.action.modelId),
      kept.map((w) => w.action.modelType),
      kept.map((w) => JSON.stringify([...new Set(w.action.dataAccess.map((d) => d.name))])),
      kept.map((w) => w.claim),
      kept.map((w) => w.action.call === ActionCall.PREDICT),
      // Only a new action, a checkpoint (the plugin waits for it) or an end is waited on: the steps between need not wait for the disk.
      writes.some((w) => w.payloads?.request !== undefined || w.payloads?.checkpoint !== undefined || isEnded(w.action)),
    ];
  }

  /** What plinth_write_actions answered; a server whose lease is gone wrote nothing. */
  #written(writes: ActionWrite[], rows: WriteResult[]): Written {
    const result = rows[0];
    if (!result?.claimed) throw this.#db.fenced();
    const first = BigInt(result.first);
    const stored = new Set(result.written);
    return {
      claimed: new Map(result.claimed.map((id, i) => [id, BigInt(result.claimed_revisions[i]!)])),
      first,
      // An ended action is never written again: what the call kept as it was is no change.
      actions: writes.flatMap((w, i) => (stored.has(w.action.id) ? [{ revision: first + BigInt(i), action: w.action }] : [])),
    };
  }
}
