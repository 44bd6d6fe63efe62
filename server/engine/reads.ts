/**
 * The reads: GetModel, ListModels, GetAction, ListActions and GetState, as functions over
 * the live table and the store, with their paging. Nothing here changes anything.
 */
import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type Action, ActionCall, ActionResultSchema, ActionSchema, type ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { encodedSize } from "../encoded.ts";
import { cut, invalid, notFound } from "../errors.ts";
import { modelMessage } from "../store/model-message.ts";
import type { Store, StoredPayloads } from "../store/store.ts";
import type { LiveAction, LiveTable } from "./live-table.ts";
import { priorityOf } from "./priority.ts";
import { checkRevision, listToken, pageSize, parseStateToken, requireId } from "./requests.ts";
import { fullerView, type ViewLimits } from "./views.ts";

export interface Readers {
  table: LiveTable;
  store: Store;
  views: ViewLimits;
  /** Lists and pages stop adding at this size. */
  pageBytes: number;
}

export async function getModel(r: Readers, modelId: string, includeInstance: boolean, revision = 0n): Promise<Model> {
  requireId("model_id", modelId);
  checkRevision("revision", revision);
  const record = await r.store.getModel(modelId, revision || undefined);
  if (!record) {
    const latest = r.table.model(modelId);
    if (latest && revision) {
      throw notFound(`model ${modelId} has no revision ${revision}: it keeps revisions ${latest.oldestRevision} to ${latest.revision}`);
    }
    throw notFound(`model ${cut(modelId)} not found`);
  }
  return modelMessage(record, includeInstance ? record.instance : undefined);
}

export async function listModels(
  r: Readers,
  query: { modelType: string; pageSize: number; pageToken: string },
): Promise<{ models: Model[]; next: string }> {
  const limit = pageSize(query.pageSize);
  const afterId = listToken(query.pageToken, "m", "ListModels");
  const records = await r.store.listModels({
    limit: limit + 1,
    ...(query.modelType ? { modelType: query.modelType } : {}),
    ...(afterId ? { afterId } : {}),
  });
  const page = records.slice(0, limit);
  return { models: page.map((m) => modelMessage(m)), next: records.length > limit ? page.at(-1)!.id : "" };
}

/** A live action as handed out: its queue position as of now, payloads as `view` asks. */
export function handOut(r: Pick<Readers, "table" | "views">, live: LiveAction, view: ActionView): Action {
  const position = r.table.queuePosition(live.view.id);
  const current = position === live.view.queuePosition ? live.view : (Object.freeze({ ...live.view, queuePosition: position }) as Action);
  const shown = fullerView(current, live, view, r.views);
  // Its reported states, in views other than BASIC: the streams' views never carry them.
  const states = view === ActionView.BASIC ? [] : r.table.states(live.view.id);
  return states.length ? (Object.freeze({ ...shown, states: [...states] }) as Action) : shown;
}

/** The action as `view` asks: live, or from the history. */
export async function getAction(r: Readers, actionId: string, view: ActionView): Promise<Action> {
  requireId("action_id", actionId);
  view ||= ActionView.RESULT;
  const live = r.table.action(actionId);
  // Another server's action: its payloads are in the store.
  if (live && !(live.remote && view !== ActionView.BASIC)) return handOut(r, live, view);
  const stored = await r.store.getAction(actionId, view !== ActionView.BASIC);
  if (!stored) throw notFound(`action ${cut(actionId)} not found`);
  return withStoredPayloads(stored.action, stored.payloads, view);
}

export interface ListActionsQuery {
  modelId: string;
  statuses: ActionStatus[];
  pageSize: number;
  pageToken: string;
  createdAfter?: Timestamp | undefined;
  createdBefore?: Timestamp | undefined;
  createdBy?: string;
  /** 1–5; 0: any. */
  priority?: number;
  calls?: ActionCall[];
  modelType?: string;
  server?: string;
  errorCode?: string;
  view: ActionView;
}

export async function listActions(r: Readers, query: ListActionsQuery): Promise<{ actions: Action[]; next: string }> {
  const limit = pageSize(query.pageSize);
  const beforeId = listToken(query.pageToken, "a", "ListActions");
  if (query.statuses.length > 16) throw invalid(`statuses: at most 16, got ${query.statuses.length}`);
  const calls = query.calls ?? [];
  const unknownCall = calls.find((c) => !(c in ActionCall) || c === ActionCall.UNSPECIFIED);
  if (unknownCall !== undefined) throw invalid(`calls: create, fit or predict (1 to 3), got ${unknownCall}`);
  for (const [key, value] of [
    ["model_type", query.modelType],
    ["server", query.server],
    ["error_code", query.errorCode],
  ] as const) {
    if (value && value.length > 256) throw invalid(`${key}: at most 256 characters, got ${value.length}`);
  }
  const view = query.view || ActionView.BASIC;
  const stored = await r.store.listActions(
    {
      limit: limit + 1,
      ...(query.modelId ? { modelId: query.modelId } : {}),
      ...(query.statuses.length ? { statuses: query.statuses } : {}),
      ...(beforeId ? { beforeId } : {}),
      ...(query.createdAfter ? { createdAfter: timestampDate(query.createdAfter) } : {}),
      ...(query.createdBefore ? { createdBefore: timestampDate(query.createdBefore) } : {}),
      ...(query.createdBy ? { createdBy: query.createdBy } : {}),
      ...(query.priority ? { priority: priorityOf(query.priority) } : {}),
      ...(calls.length ? { calls: [...new Set(calls)] } : {}),
      ...(query.modelType ? { modelType: query.modelType } : {}),
      ...(query.server ? { server: query.server } : {}),
      ...(query.errorCode ? { errorCode: query.errorCode } : {}),
    },
    view !== ActionView.BASIC,
  );
  // A page ends at `limit` actions or pageBytes, whichever comes first (one at least).
  const actions: Action[] = [];
  let bytes = 0;
  for (const { action, payloads } of stored.slice(0, limit)) {
    const shown = withStoredPayloads(action, payloads, view);
    bytes += encodedSize(ActionSchema, shown);
    if (actions.length > 0 && bytes > r.pageBytes) break;
    actions.push(shown);
  }
  const more = actions.length < stored.length;
  return { actions, next: more ? actions.at(-1)!.id : "" };
}

/** A page of the state: models, then actions, until pageBytes; `token` says where the last page ended. */
export function getState(
  r: Pick<Readers, "table" | "pageBytes">,
  revision: bigint,
  token: string,
): { revision: bigint; models: Model[]; actions: Action[]; next: string } {
  const [section, after] = parseStateToken(token);
  const page = { revision, models: [] as Model[], actions: [] as Action[], next: "" };
  let bytes = 0;
  const fits = (size: number) => {
    bytes += size;
    return bytes <= r.pageBytes || page.models.length + page.actions.length === 0;
  };
  if (section === "m") {
    for (const model of r.table.models()) {
      if (after && model.id <= after) continue;
      if (!fits(encodedSize(ModelSchema, model))) return { ...page, next: `m:${page.models.at(-1)!.id}` };
      page.models.push(model);
    }
  }
  for (const live of r.table.actions()) {
    if (section === "a" && after && live.view.id <= after) continue;
    if (!fits(encodedSize(ActionSchema, live.view))) {
      const last = page.actions.at(-1);
      return { ...page, next: last ? `a:${last.id}` : `m:${page.models.at(-1)!.id}` };
    }
    page.actions.push(live.view);
  }
  return page;
}

/** The action from the history, with the payloads it kept as `view` asks. */
function withStoredPayloads(stored: Action, payloads: StoredPayloads | undefined, view: ActionView): Action {
  // The reported states the history keeps show in views other than BASIC.
  const action = view === ActionView.BASIC && stored.states.length ? { ...stored, states: [] } : stored;
  if (!payloads || view === ActionView.BASIC) return action;
  const fuller: Partial<Action> = {};
  if (payloads.prediction && action.result) fuller.result = create(ActionResultSchema, { ...action.result, prediction: payloads.prediction });
  if (view === ActionView.FULL && payloads.args) Object.assign(fuller, payloads.args);
  return { ...action, ...fuller };
}
