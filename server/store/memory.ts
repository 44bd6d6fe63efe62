/**
 * The in-memory store, for tests and throwaway runs. Action history is bounded by
 * `maxActions` (oldest finished first) so memory does not grow with the actions run.
 */
import { clone } from "@bufbuild/protobuf";
import { type Action, ActionSchema } from "../../gen/plinth/v1/action_pb.ts";
import type { ListActionsQuery, ListModelsQuery, ModelMeta, ModelRecord, Store } from "./store.ts";

export class MemoryStore implements Store {
  readonly #models = new Map<string, ModelRecord>();
  /** Insertion order is creation order: ids are time-ordered. */
  readonly #actions = new Map<string, Action>();
  readonly #maxActions: number;

  constructor(options: { maxActions: number }) {
    this.#maxActions = options.maxActions;
  }

  async getModel(id: string): Promise<ModelRecord | undefined> {
    const model = this.#models.get(id);
    return model && { ...model };
  }

  async putModel(model: ModelRecord): Promise<void> {
    this.#models.set(model.id, { ...model });
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
    return [...this.#models.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map(({ instance: _, ...meta }) => meta);
  }

  /** Keeps the object given: the engine hands over snapshots it never changes. */
  async putAction(action: Action): Promise<void> {
    this.#actions.set(action.id, action);
    if (this.#actions.size > this.#maxActions) {
      for (const [id, a] of this.#actions) {
        if (a.endTime) {
          this.#actions.delete(id);
          if (this.#actions.size <= this.#maxActions) break;
        }
      }
    }
  }

  async getAction(id: string): Promise<Action | undefined> {
    const action = this.#actions.get(id);
    return action && clone(ActionSchema, action);
  }

  async listActions(query: ListActionsQuery): Promise<Action[]> {
    const out: Action[] = [];
    for (const action of [...this.#actions.values()].reverse()) {
      if (query.beforeId && action.id >= query.beforeId) continue;
      if (query.modelId && action.modelId !== query.modelId) continue;
      if (query.statuses?.length && !query.statuses.includes(action.status)) continue;
      out.push(clone(ActionSchema, action));
      if (out.length >= query.limit) break;
    }
    return out;
  }

  async close(): Promise<void> {}
}
