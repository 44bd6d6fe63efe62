/**
 * What every store agrees on about its records, held once: which statuses are ended,
 * which revisions a model keeps, how an action and its payloads are encoded, and how the
 * SQL stores' rows (SQLite's and PostgreSQL's share their columns) map to records.
 */
import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { type Action, ActionCall, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import type { ListActionsQuery, ModelMeta, ModelRecord, StoredAction, StoredPayloads } from "./store.ts";

/** The statuses an action ends with: it never changes again. */
export const ENDED: ReadonlySet<ActionStatus> = new Set([ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED]);

/** The ended statuses as a list, for SQL (`status IN (…)`, `= ANY($1)`). */
export const ENDED_STATUSES: readonly ActionStatus[] = [...ENDED];

/** The statuses of an action not yet ended: what an index on status finds without reading the history. */
export const UNFINISHED_STATUSES: readonly ActionStatus[] = [
  ActionStatus.QUEUED,
  ActionStatus.ACCESSING_DATA,
  ActionStatus.EXECUTING,
  ActionStatus.STORING,
];

/** The priority of an action stored without one (before priorities, or a request that set none): the queue's default. */
export const DEFAULT_PRIORITY = 3;

export function isEnded(action: { status: ActionStatus }): boolean {
  return ENDED.has(action.status);
}

/**
 * The model as a store stores its new revision: the oldest revision kept is the one
 * `keepRevisions` back from it (the latest counts), never one older than the model kept
 * before, never below 1.
 */
export function withKeptRevisions(model: ModelRecord, keepRevisions: number): ModelRecord {
  const back = model.revision - BigInt(keepRevisions) + 1n;
  const oldest = back > model.oldestRevision ? back : model.oldestRevision;
  return { ...model, oldestRevision: oldest < 1n ? 1n : oldest };
}

/** The metadata of a record: everything but the instance bytes. */
export function metaOf(model: ModelRecord): ModelMeta {
  const { instance: _, ...meta } = model;
  return meta;
}

/** A timestamp as the SQL stores keep it: whole milliseconds since the epoch; null when unset. */
export function msOf(time: Action["createTime"]): number | null {
  return time ? Number(time.seconds) * 1000 + Math.floor(time.nanos / 1e6) : null;
}

/** An action as the stores keep it: its JSON form (what GetAction answers, readable in the database). */
export function encodeAction(action: Action): string {
  return toJsonString(ActionSchema, action);
}

export function decodeAction(json: string): Action {
  return fromJsonString(ActionSchema, json);
}

/** An action's indexed columns, as both SQL stores name them, with its JSON form. */
export function actionColumns(action: Action) {
  return {
    id: action.id,
    model_id: action.modelId,
    status: action.status,
    create_time: msOf(action.createTime),
    end_time: msOf(action.endTime),
    created_by: action.createdBy,
    json: encodeAction(action),
  };
}

/** Bytes a driver read (a Buffer), as the stores hand them on: a plain view of the same memory. */
export function bytesOf(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Payloads as the SQL stores keep them: the arguments as an Action message's args and kwargs, the prediction as an Arg. */
export interface PayloadColumns {
  args: Uint8Array | null;
  prediction: Uint8Array | null;
}

export function encodePayloads(payloads: StoredPayloads): PayloadColumns {
  return {
    args: payloads.args ? toBinary(ActionSchema, create(ActionSchema, payloads.args)) : null,
    prediction: payloads.prediction ? toBinary(ArgSchema, payloads.prediction) : null,
  };
}

/** Whether the payloads carry anything kept in the history (a request alone is not). */
export function hasKeptPayloads(payloads: StoredPayloads | undefined): boolean {
  return payloads?.args !== undefined || payloads?.prediction !== undefined;
}

export function decodePayloads(columns: PayloadColumns): StoredPayloads {
  const payloads: StoredPayloads = {};
  if (columns.args) {
    const { args, kwargs } = fromBinary(ActionSchema, columns.args);
    payloads.args = { args, kwargs };
  }
  if (columns.prediction) payloads.prediction = fromBinary(ArgSchema, columns.prediction);
  return payloads;
}

/** An action read back, with its payloads when their row was read. */
export function storedAction(json: string, payloads: PayloadColumns | undefined): StoredAction {
  const action = decodeAction(json);
  return payloads ? { action, payloads: decodePayloads(payloads) } : { action };
}

/** Payloads given earlier, replaced by those given now where both have one. */
export function mergePayloads(earlier: StoredPayloads | undefined, now: StoredPayloads | undefined): StoredPayloads | undefined {
  return earlier || now ? { ...earlier, ...now } : undefined;
}

type Int = number | bigint | string;

/** A row of the models table: numbers from SQLite, strings (bigint) from PostgreSQL, numbers again through row_to_json. */
export interface ModelRow {
  id: string;
  model_type: string;
  revision: Int;
  oldest_revision: Int;
  create_time: Int;
  update_time: Int;
  instance_size: Int;
  action_id: string;
}

export function modelMeta(row: ModelRow): ModelMeta {
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

/** A kept revision's own columns, read beside its model's row. */
export interface RevisionRow {
  r_revision: Int;
  r_time: Int;
  r_size: Int;
  r_action: string;
}

/** The model at one of its kept revisions: the latest's metadata but for what that revision had. */
export function atRevision(latest: ModelMeta, row: RevisionRow, instance: Uint8Array): ModelRecord {
  const revision = BigInt(row.r_revision);
  if (revision === latest.revision) return { ...latest, instance };
  return {
    ...latest,
    revision,
    updateTime: new Date(Number(row.r_time)),
    instanceSize: Number(row.r_size),
    actionId: row.r_action,
    instance,
  };
}

/** What Store.revisionMadeBy finds: the model's row, and the revision's that the action made. */
export interface MadeRow extends ModelRow {
  made_revision: Int;
  made_time: Int;
  made_size: Int;
}

export function madeRevision(row: MadeRow, actionId: string): ModelMeta {
  return {
    ...modelMeta(row),
    revision: BigInt(row.made_revision),
    updateTime: new Date(Number(row.made_time)),
    instanceSize: Number(row.made_size),
    actionId,
  };
}

/**
 * The filters of a list read from an action's JSON (its proto3 JSON: camelCase fields),
 * not indexed: beside the indexed ones, on a page read newest first.
 */
export function jsonFilters(query: Pick<ListActionsQuery, "modelType" | "server" | "errorCode">): [path: string, value: string][] {
  const filters: [string, string][] = [];
  if (query.modelType) filters.push(["modelType", query.modelType]);
  if (query.server) filters.push(["server", query.server]);
  if (query.errorCode) filters.push(["error.code", query.errorCode]);
  return filters;
}

/** A call as the action's JSON names it (ACTION_CALL_FIT). */
export function callName(call: ActionCall): string {
  return `ACTION_CALL_${ActionCall[call]}`;
}
