/** Store.revisionMadeBy on PostgreSQL: what the store answers, and what the cluster's sweep asks in its own transaction. */
import { type Action, ActionStatus } from "../../../gen/plinth/v1/action_pb.ts";
import { type MadeRow, madeRevision } from "../records.ts";
import type { ModelMeta } from "../store.ts";

/** A query on the pool or in a transaction. */
export type Query = (sql: string, params: unknown[]) => Promise<{ rows: MadeRow[] }>;

/**
 * The revision an unfinished action made, when the database holds one: only one left
 * STORING can have one. A new model's id is found by the action that made it.
 */
export async function revisionMadeBy(query: Query, action: Action): Promise<ModelMeta | undefined> {
  if (action.status !== ActionStatus.STORING) return undefined;
  const { rows } = await query(
    `SELECT m.*, r.revision AS made_revision, r.create_time AS made_time, r.instance_size AS made_size
     FROM models m JOIN model_revisions r ON r.model_id = m.id
     WHERE r.action_id = $1 AND m.id = coalesce(nullif($2, ''), (SELECT id FROM models WHERE action_id = $1))`,
    [action.id, action.modelId],
  );
  return rows[0] && madeRevision(rows[0], action.id);
}
