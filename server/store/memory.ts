/**
 * The in-memory store, for tests and throwaway runs: nothing survives the process.
 * Kept revisions and the action history are bounded as in the SQLite store, so memory
 * does not grow with the actions run.
 */
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { randomHex, runId } from "../run-id.ts";
import { DEFAULT_PRIORITY, isEnded, mergePayloads, metaOf, msOf, withKeptRevisions } from "./records.ts";
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

export interface MemoryOptions {
  keepRevisions: number;
  maxActions: number;
  maxActionAgeMs: number;
}

export class MemoryStore implements Store {
  readonly id = randomHex(6);
  readonly owner = `${this.id}.${runId()}`;
  /** Each model's kept revisions, oldest first. */
  readonly #models = new Map<string, ModelRecord[]>();
  /** Insertion order is creation order: ids are time-ordered. Actions are immutable views. */
  readonly #actions = new Map<string, StoredAction>();
  /** Request ids by caller and id, with when each was claimed. */
  readonly #requests = new Map<string, { claim: RequestClaim; at: number }>();
  /** The key each claiming action holds: it goes with the action. */
  readonly #requestOf = new Map<string, string>();
  readonly #o: MemoryOptions;

  constructor(options: MemoryOptions) {
    this.#o = options;
  }

  async getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined> {
    const revisions = this.#models.get(id);
    const latest = revisions?.at(-1);
    if (!latest) return undefined;
    if (revision === undefined || revision === latest.revision) return { ...latest };
    const older = revisions!.find((r) => r.revision === revision);
    return (
      older && {
        ...latest,
        revision: older.revision,
        updateTime: older.updateTime,
        instanceSize: older.instanceSize,
        actionId: older.actionId,
        instance: older.instance,
      }
    );
  }

  async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    const stored = withKeptRevisions(model, this.#o.keepRevisions);
    const { oldestRevision } = stored;
    const revisions = (this.#models.get(model.id) ?? []).filter((r) => r.revision !== model.revision && r.revision >= oldestRevision);
    revisions.push(stored);
    for (const r of revisions) r.oldestRevision = oldestRevision;
    const meta = metaOf(stored);
    // The action's end with the revision, in one step: nothing runs between the two.
    const end = ended?.(meta);
    this.#models.set(model.id, revisions);
    if (end) await this.putAction(end.action, end.payloads);
    return meta;
  }

  async deleteModel(id: string): Promise<boolean> {
    return this.#models.delete(id);
  }

  async allModels(): Promise<ModelMeta[]> {
    return this.#sorted();
  }

  async listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    return this.#sorted()
      .filter((m) => (!query.modelType || m.modelType === query.modelType) && (!query.afterId || m.id > query.afterId))
      .slice(0, query.limit);
  }

  #sorted(): ModelMeta[] {
    return [...this.#models.values()]
      .map((revisions) => revisions.at(-1)!)
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map(({ instance: _, ...meta }) => meta);
  }

  /** Keeps the objects given: the engine hands over views it never changes. Nothing to linger over. */
  async putAction(action: Action, payloads?: StoredPayloads, _lingerMs?: number): Promise<void> {
    const previous = this.#actions.get(action.id)?.payloads;
    const merged = mergePayloads(previous, payloads);
    // The request and checkpoint are kept only while the action may run again.
    if (merged && isEnded(action)) {
      delete merged.request;
      delete merged.checkpoint;
    }
    this.#actions.set(action.id, { action, payloads: merged && Object.keys(merged).length ? merged : undefined });
  }

  async getAction(id: string, withPayloads = false): Promise<StoredAction | undefined> {
    const stored = this.#actions.get(id);
    return stored && (withPayloads ? stored : { action: stored.action });
  }

  async settleEnd(action: Action): Promise<Action> {
    const held = this.#actions.get(action.id)?.action;
    if (held && isEnded(held)) return held;
    await this.putAction(action);
    return action;
  }

  async listActions(query: ListActionsQuery, withPayloads = false): Promise<StoredAction[]> {
    const ms = (t: Action["createTime"]) => msOf(t) ?? 0;
    const out: StoredAction[] = [];
    for (const stored of [...this.#actions.values()].reverse()) {
      const { action } = stored;
      if (query.beforeId && action.id >= query.beforeId) continue;
      if (query.modelId && action.modelId !== query.modelId) continue;
      if (query.statuses?.length && !query.statuses.includes(action.status)) continue;
      if (query.createdAfter && ms(action.createTime) < query.createdAfter.getTime()) continue;
      if (query.createdBefore && ms(action.createTime) >= query.createdBefore.getTime()) continue;
      if (query.createdBy && action.createdBy !== query.createdBy) continue;
      if (query.priority && (action.priority || DEFAULT_PRIORITY) !== query.priority) continue;
      if (query.calls?.length && !query.calls.includes(action.call)) continue;
      if (query.modelType && action.modelType !== query.modelType) continue;
      if (query.server && action.server !== query.server) continue;
      if (query.errorCode && action.error?.code !== query.errorCode) continue;
      out.push(withPayloads ? stored : { action });
      if (out.length >= query.limit) break;
    }
    return out;
  }

  async unfinishedActions(): Promise<Action[]> {
    return [...this.#actions.values()].map((s) => s.action).filter((action) => !isEnded(action));
  }

  async pendingRequest(actionId: string): Promise<PendingRequest> {
    const stored = this.#actions.get(actionId);
    if (!stored || isEnded(stored.action)) return {};
    return { request: stored.payloads?.request, checkpoint: stored.payloads?.checkpoint };
  }

  async revisionMadeBy(action: Action): Promise<ModelMeta | undefined> {
    if (action.status !== ActionStatus.STORING) return undefined;
    // A new model's id is found by the action that made it (its latest revision, the first).
    const revisions = action.modelId
      ? this.#models.get(action.modelId)
      : [...this.#models.values()].find((kept) => kept.at(-1)!.actionId === action.id);
    const made = revisions?.find((r) => r.actionId === action.id);
    if (!made) return undefined;
    const { revision, updateTime, instanceSize } = made;
    return { ...metaOf(revisions!.at(-1)!), revision, updateTime, instanceSize, actionId: action.id };
  }

  async pruneActions(now: Date): Promise<number> {
    const cutoff = now.getTime() - this.#o.maxActionAgeMs;
    const finished = [...this.#actions.values()].map((s) => s.action).filter((a) => a.endTime);
    let excess = finished.length - this.#o.maxActions;
    let removed = 0;
    for (const action of finished) {
      const ended = msOf(action.endTime)!;
      if (excess <= 0 && ended >= cutoff) continue;
      this.#actions.delete(action.id);
      this.#freeRequest(action.id);
      excess--;
      removed++;
    }
    for (const { claim, at } of [...this.#requests.values()]) {
      if (at < cutoff && !this.#actions.has(claim.actionId)) this.#freeRequest(claim.actionId);
    }
    return removed;
  }

  async claimRequest(claim: RequestClaim, now: Date): Promise<RequestClaim | undefined> {
    const key = requestKey(claim);
    const held = this.#requests.get(key);
    const stored = held && (held.claim.outcome || this.#actions.has(held.claim.actionId));
    const free = !held || (!stored && held.at < now.getTime() - STALE_CLAIM_MS);
    if (!free) return { ...held.claim };
    if (held) this.#requestOf.delete(held.claim.actionId);
    this.#requests.set(key, { claim: { ...claim, outcome: "" }, at: now.getTime() });
    this.#requestOf.set(claim.actionId, key);
    return undefined;
  }

  #freeRequest(actionId: string): void {
    const key = this.#requestOf.get(actionId);
    if (key === undefined) return;
    this.#requestOf.delete(actionId);
    this.#requests.delete(key);
  }

  async releaseRequest(claim: RequestClaim): Promise<void> {
    this.#freeRequest(claim.actionId);
  }

  async settleRequest(claim: RequestClaim, outcome: string): Promise<void> {
    const held = this.#requests.get(requestKey(claim));
    if (held?.claim.actionId === claim.actionId) held.claim = { ...held.claim, outcome };
  }

  // Children of a server that died leave no trace in memory: nothing to track.
  async trackChild(_child: TrackedChild): Promise<void> {}
  async untrackChild(_pid: number): Promise<void> {}
  async trackedChildren(): Promise<TrackedChild[]> {
    return [];
  }
  async clearTrackedChildren(): Promise<void> {}

  async close(): Promise<void> {}
}

function requestKey(claim: { createdBy: string; requestId: string }): string {
  return `${claim.createdBy}\0${claim.requestId}`;
}
