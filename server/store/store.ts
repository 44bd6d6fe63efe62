/**
 * What the engine needs from a backend. The memory store implements it now; a
 * persistent store implements the same interface.
 */
import type { Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";

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
  limit: number;
}

/** A plugin child, recorded so that a restart can reap it if the server died. */
export interface TrackedChild {
  pid: number;
  /** Its start time in clock ticks since boot (/proc/<pid>/stat field 22): tells it from a reused pid. */
  startTicks: string;
}

export interface Store {
  /** The latest revision, or the given one while it is kept. */
  getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined>;
  /** Stores the model's new revision (dropping revisions beyond the kept count); resolves once committed. */
  putModel(model: ModelRecord): Promise<ModelMeta>;
  deleteModel(id: string): Promise<boolean>;
  /** Metadata of every model, in id order: the engine's live state. */
  allModels(): Promise<ModelMeta[]>;
  /** A page of models in id order, without instance bytes. */
  listModels(query: ListModelsQuery): Promise<ModelMeta[]>;
  /** Stores the action; the caller does not change the object afterwards. */
  putAction(action: Action): Promise<void>;
  getAction(id: string): Promise<Action | undefined>;
  /** Newest first. */
  listActions(query: ListActionsQuery): Promise<Action[]>;
  /** Actions stored as not ended: after a restart, those the dead server was running. */
  unfinishedActions(): Promise<Action[]>;
  /** Applies the history's retention (count and age); returns how many were dropped. */
  pruneActions(now: Date): Promise<number>;
  trackChild(child: TrackedChild): Promise<void>;
  untrackChild(pid: number): Promise<void>;
  trackedChildren(): Promise<TrackedChild[]>;
  clearTrackedChildren(): Promise<void>;
  close(): Promise<void>;
}
