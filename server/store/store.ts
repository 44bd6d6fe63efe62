/**
 * What the engine needs from a backend: SQLite (the default) and memory implement it;
 * PostgreSQL implements it too, with a Cluster: several servers on one database.
 */
import type { EventEmitter } from "node:events";
import type { Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
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
  /**
   * Several servers share this store (postgres): each action's whole request is kept
   * until it ends, and the server that runs it claims it from there.
   */
  readonly cluster?: Cluster | undefined;
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
   * and the payloads given; payloads given earlier stay unless replaced.
   */
  putAction(action: Action, payloads?: StoredPayloads): Promise<void>;
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
  /**
   * The revision an unfinished action made, when the store holds one: only an action left
   * STORING by a server of an older Plinth, which committed a revision and its action's
   * end apart and died between the two.
   */
  revisionMadeBy(action: Action): Promise<ModelMeta | undefined>;
  /** Applies the history's retention (count and age); returns how many were dropped. */
  pruneActions(now: Date): Promise<number>;
  trackChild(child: TrackedChild): Promise<void>;
  untrackChild(pid: number): Promise<void>;
  trackedChildren(): Promise<TrackedChild[]>;
  clearTrackedChildren(): Promise<void>;
  /** The marks of the live servers sharing this store (a cluster): their children are no orphans. */
  liveOwners?(): Promise<string[]>;
  close(): Promise<void>;
}

/** A change as the database ordered it: what every server of a cluster applies, in revision order. */
export type FeedChange =
  | { readonly revision: bigint; readonly kind: "action"; readonly action: Action }
  | { readonly revision: bigint; readonly kind: "model"; readonly model: ModelMeta }
  | { readonly revision: bigint; readonly kind: "model_deleted"; readonly modelId: string };

/** A commit's revisions, and the server that made it. */
export interface CommittedBatch {
  server: string;
  first: bigint;
  last: bigint;
}

/** Queued work this server took: the action as stored, and its whole request (a PredictRequest's encoding). */
export interface ClaimedAction {
  action: Action;
  request: Uint8Array;
  /** Its model's revision when claimed (0 without a model): it stays so while the action runs. */
  modelRevision: bigint;
}

/** A server of the cluster, as its row says. */
export interface ServerInfo {
  name: string;
  host: string;
  pid: number;
  since: Date;
  /** Where it serves gRPC (host:port). */
  address: string;
  modelTypes: string[];
  dataAccess: string[];
  plugins: string[];
  /** The server answering. */
  self: boolean;
}

export interface ClusterEvents {
  /**
   * Something changed: fetch the changes after the last one applied. With a batch: which
   * server committed which revisions (this server's own it can take from ownChanges).
   */
  changes: [batch?: CommittedBatch];
  /** Work may be claimable: an action was queued, or one ended. */
  work: [];
  /** A server asks the one running this action to cancel it. */
  cancel: [actionId: string, by: string];
}

/** What several servers on one database share, beyond the Store. */
export interface Cluster {
  /** This server's name in the cluster. */
  readonly server: string;
  readonly events: EventEmitter<ClusterEvents>;
  /** Models and unfinished actions as of one revision: where a server's live state starts. */
  snapshot(): Promise<{ revision: bigint; models: ModelMeta[]; actions: Action[] }>;
  /** The changes after `after`, in revision order, at most `limit` (each key's latest). */
  changes(after: bigint, limit: number): Promise<FeedChange[]>;
  /**
   * Stores a new action (its payloads with its whole request) in the queue; with `claim`
   * it is this server's at once when its model is free. Resolves with its model's
   * revision (0 without a model) when it is, undefined when it is queued.
   */
  enqueue(action: Action, payloads: StoredPayloads, claim: boolean): Promise<bigint | undefined>;
  /** Takes up to `n` queued actions this server can run (its model types and data-access functions). */
  claim(n: number, modelTypes: string[], dataAccess: string[]): Promise<ClaimedAction[]>;
  /** This server's own changes committed from revision `first` on (waiting up to waitMs for the commit's answer); undefined if not known. */
  ownChanges(first: bigint, waitMs: number): Promise<FeedChange[] | undefined>;
  /** Drops what ownChanges holds up to this revision: applied otherwise. */
  forgetOwn(upTo: bigint): void;
  /** Takes a queued action no server has claimed, to end it here; undefined when one runs it, or it ended. */
  takeQueued(actionId: string): Promise<Action | undefined>;
  /** Where the model's queue ends now (0 when empty): the calls up to there come before a change of the model made now. */
  queueEnd(modelId: string): Promise<bigint>;
  /**
   * Stores the model's next revision (as putModel) only while no call on it is claimed
   * and none queued up to `queuedUpTo` is left: undefined when one is (wait, and try again).
   */
  putModelQuiet(model: ModelRecord, queuedUpTo: bigint): Promise<ModelMeta | undefined>;
  /** The actions whose queue entry this server holds (claimed, not ended). */
  owned(): Promise<string[]>;
  /**
   * Gives back what this server holds but lost track of (a claim whose answer a broken
   * connection lost): not started, queued again; started, ended interrupted saying why.
   */
  release(actionIds: string[], why: string): Promise<void>;
  /** Asks whichever server runs the action to cancel it. */
  requestCancel(actionId: string, by: string): Promise<void>;
  /** Says what this server serves and runs, for ListPlugins on every server. */
  announce(info: { address: string; modelTypes: string[]; dataAccess: string[]; plugins: string[] }): Promise<void>;
  /** The live servers, oldest first. */
  servers(): Promise<ServerInfo[]>;
}
