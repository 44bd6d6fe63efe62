/**
 * What several Plinth servers on one database share beyond the Store: the change feed,
 * the queue they claim work from, cross-server cancel, and who serves what. PostgreSQL
 * is the one implementation (postgres-cluster.ts).
 */
import type { EventEmitter } from "node:events";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { ServerInfo } from "../engine/runner.ts";
import type { ModelMeta, ModelRecord, StoredPayloads } from "../store/store.ts";

export type { ServerInfo };

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

/** What a server claims queued work for. */
export interface ClaimScope {
  /** Its model types and data-access functions: the calls it can run. */
  modelTypes: string[];
  dataAccess: string[];
  /** The models its children hold resident: their calls first, but not over a call queued longer than affinityMs (0: none first). */
  held: string[];
  affinityMs: number;
}

/** What a server says it serves and runs. */
export interface Announced {
  address: string;
  modelTypes: string[];
  dataAccess: string[];
  plugins: string[];
  /**
   * The model types whose predicts it runs shared (declared concurrent), with how many of
   * them on one model at once (max_replicas). A predict is shared in the cluster when every
   * live server that declares its type runs it shared.
   */
  shares: Record<string, number>;
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
  /**
   * Resolves with why once this server lost its lease (it stalled, or could not reach the
   * database, and another server ended its actions): it writes nothing more and must stop
   * serving. Never resolves otherwise.
   */
  readonly leaseLost: Promise<string>;
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
  /** Takes up to `n` queued actions this server can run, in the queue's order per model, those it prefers first. */
  claim(n: number, scope: ClaimScope): Promise<ClaimedAction[]>;
  /** This server's own changes committed from revision `first` on (waiting up to waitMs for the commit's answer); undefined if not known. */
  ownChanges(first: bigint, waitMs: number): Promise<FeedChange[] | undefined>;
  /** Drops what ownChanges holds up to this revision: applied otherwise. */
  forgetOwn(upTo: bigint): void;
  /** Takes a queued action no server has claimed, to end it here; undefined when one runs it, or it ended. */
  takeQueued(actionId: string): Promise<Action | undefined>;
  /**
   * Puts an update of the model made outside the queue (UpdateInstance), under the
   * caller's `id`, at the end of the model's queue: the calls queued after it wait until
   * it leaves (putModelQuiet or dropUpdate; or this server leaves the cluster).
   */
  queueUpdate(id: string, modelId: string): Promise<void>;
  /**
   * Stores the model's next revision (as putModel) once nothing queued before the update
   * `id` is left and no call on the model is claimed, and takes the update out of the
   * queue: undefined until then (wait, and try again).
   */
  putModelQuiet(model: ModelRecord, update: string): Promise<ModelMeta | undefined>;
  /** Takes the update out of its model's queue without storing anything. */
  dropUpdate(id: string): Promise<void>;
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
  announce(info: Announced): Promise<void>;
  /** The live servers, oldest first. */
  servers(): Promise<ServerInfo[]>;
}
