/**
 * What the engine needs from a backend: SQLite (the default), memory and PostgreSQL
 * implement it. Several servers on one PostgreSQL database are a Cluster besides
 * (server/cluster/), which the backend's opening hands over with the store (open.ts).
 */
import type { Action, ActionCall, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { PlinthError } from "../errors.ts";

/** A model's metadata: everything but the instance bytes. */
export interface ModelMeta {
  id: string;
  modelType: string;
  revision: bigint;
  createTime: Date;
  updateTime: Date;
  instanceSize: number;
  /** The action that produced this revision; "" for AddInstance and UpdateInstance. */
  actionId: string;
  /** The oldest revision still kept. */
  oldestRevision: bigint;
}

/** A model with its serialized instance. */
export interface ModelRecord extends ModelMeta {
  instance: Uint8Array;
}

export interface ListModelsQuery {
  modelType?: string;
  /** Only ids after this one (ids sort in creation order). */
  afterId?: string;
  limit: number;
}

export interface ListActionsQuery {
  modelId?: string;
  statuses?: ActionStatus[];
  /** Only actions created before this one (newest first). */
  beforeId?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  /** Only actions this caller started. */
  createdBy?: string;
  /** Only actions of this priority (one stored without a priority has 3). */
  priority?: number;
  /** Only these calls. */
  calls?: ActionCall[];
  modelType?: string;
  /** Only actions this server of a cluster ran (Action.server). */
  server?: string;
  /** Only actions whose error has this code. */
  errorCode?: string;
  limit: number;
}

/**
 * An action's arguments and result in full where its view shows summaries: what the
 * history keeps of them (up to backend.max_payload_bytes each).
 */
export interface StoredPayloads {
  args?: { args: Arg[]; kwargs: Record<string, Arg> };
  prediction?: Arg;
  /**
   * The whole request (a PredictRequest's encoding: args, kwargs, json_form), kept while
   * the action has not ended, where the store keeps requests (keepsRequests).
   */
  request?: Uint8Array;
  /**
   * The last checkpoint its plugin stored (ctx.checkpoint(value)), as the worker encodes a
   * Value: kept while the action has not ended, for its next attempt.
   */
  checkpoint?: Uint8Array;
}

/** What an unfinished action's next attempt starts from, after a restart or on another server. */
export interface PendingRequest {
  /** Its whole request (requestBytes), when the store kept it: an action with a retry policy. */
  request?: Uint8Array | undefined;
  checkpoint?: Uint8Array | undefined;
}

/** An action from the history, with its payloads when they were asked for and kept. */
export interface StoredAction {
  action: Action;
  payloads?: StoredPayloads | undefined;
}

/**
 * The action a model's new revision ends, as it ends: made from the revision's metadata as
 * the store stores it. Called once, before the commit.
 */
export type EndedWith = (meta: ModelMeta) => StoredAction;

/**
 * A store's error for a commit whose answer was lost with the connection (postgres): the
 * database may have made it, or not.
 */
export class CommitUnknownError extends PlinthError {
  readonly commitUnknown = true;
}

export function isCommitUnknown(error: unknown): boolean {
  return PlinthError.is(error) && (error as { commitUnknown?: unknown }).commitUnknown === true;
}

/**
 * An idempotent request (a request_id): who sent it, its id, a digest of its arguments,
 * and the action it started.
 */
export interface RequestClaim {
  createdBy: string;
  requestId: string;
  fingerprint: string;
  /** The action it started; for a call that starts none (AddInstance…), the call's own id (r-…). */
  actionId: string;
  /** What a call that starts no action did, once it did (settleRequest); "" or absent until then. */
  outcome?: string;
}

/**
 * A claim whose action is still not stored this long after it was made was left by a
 * server that died between the two: the next request with its id takes it over.
 */
export const STALE_CLAIM_MS = 30_000;

/** A plugin child, recorded so that a restart can reap it if the server died. */
export interface TrackedChild {
  pid: number;
  /** Its start time in clock ticks since boot (/proc/<pid>/stat field 22): tells it from a reused pid. */
  startTicks: string;
}

export interface Store {
  /** The database's own id; the plugin children of its servers carry it in their mark. */
  readonly id: string;
  /** This server's mark on its children: `<id>.<run id>`. */
  readonly owner: string;
  /** The latest revision, or the given one while it is kept. */
  getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined>;
  /**
   * Stores the model's new revision (dropping revisions beyond the kept count); resolves
   * once committed. With `ended`: the action whose success that revision is, as it ends,
   * in the same commit — both are stored or neither (a rejection that isCommitUnknown
   * leaves open which: settleEnd tells).
   */
  putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta>;
  deleteModel(id: string): Promise<boolean>;
  /** Metadata of every model, in id order: the engine's live state. */
  allModels(): Promise<ModelMeta[]>;
  /** A page of models in id order, without instance bytes. */
  listModels(query: ListModelsQuery): Promise<ModelMeta[]>;
  /**
   * Stores the action (as its view shows it; the caller never changes it afterwards),
   * and the payloads given; payloads given earlier stay unless replaced. With `lingerMs`
   * (a call's start) the write may wait that long for the action's next change and be
   * made with it (batcher.ts); reads see it all the same.
   */
  putAction(action: Action, payloads?: StoredPayloads, lingerMs?: number): Promise<void>;
  getAction(id: string, withPayloads?: boolean): Promise<StoredAction | undefined>;
  /**
   * Stores the action's end unless the store holds it ended already; resolves with the
   * action as the store holds it then. How a commit whose answer was lost is settled.
   */
  settleEnd(action: Action): Promise<Action>;
  /** Newest first. */
  listActions(query: ListActionsQuery, withPayloads?: boolean): Promise<StoredAction[]>;
  /** Actions stored as not ended: after a restart, those the dead server was running. */
  unfinishedActions(): Promise<Action[]>;
  /** The request and last checkpoint kept with an unfinished action (StoredPayloads' request and checkpoint). */
  pendingRequest(actionId: string): Promise<PendingRequest>;
  /**
   * The revision an unfinished action made, when the store holds one: only an action left
   * STORING by a server of an older Plinth, which committed a revision and its action's
   * end apart and died between the two.
   */
  revisionMadeBy(action: Action): Promise<ModelMeta | undefined>;
  /**
   * Applies the history's retention (count and age); returns how many actions were
   * dropped. Request ids go with their actions; those of calls that start none, by age.
   */
  pruneActions(now: Date): Promise<number>;
  /**
   * Claims the caller's request id for the action, one claim at a time across the
   * servers sharing the store: resolves undefined when this claim now holds it, else with
   * the claim that does. A claim whose action is not stored STALE_CLAIM_MS after it was
   * made is taken over; one whose action the history dropped is gone (the id is free).
   */
  claimRequest(claim: RequestClaim, now: Date): Promise<RequestClaim | undefined>;
  /** Frees the id this action claimed (the action was refused before it was stored). */
  releaseRequest(claim: RequestClaim): Promise<void>;
  /**
   * Records what a call that starts no action did under its claim: the claim then holds
   * (as a stored action's does) until pruneActions drops it past max_action_age_days.
   */
  settleRequest(claim: RequestClaim, outcome: string): Promise<void>;
  trackChild(child: TrackedChild): Promise<void>;
  untrackChild(pid: number): Promise<void>;
  trackedChildren(): Promise<TrackedChild[]>;
  clearTrackedChildren(): Promise<void>;
  /** The marks of the live servers sharing this store (a cluster): their children are no orphans. */
  liveOwners?(): Promise<string[]>;
  close(): Promise<void>;
}
