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
  limit: number;
}

export interface Store {
  getModel(id: string): Promise<ModelRecord | undefined>;
  /** Inserts or replaces a model; resolves once it is durable. */
  putModel(model: ModelRecord): Promise<void>;
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
  close(): Promise<void>;
}
