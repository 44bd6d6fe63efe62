/**
 * The engine: models, actions and their lifecycle. Calls on one model run one at a
 * time (ModelLocks); every plugin call goes through the ProcessManager; every change
 * is stored and published on the StateHub with a new revision.
 */
import { clone, create } from "@bufbuild/protobuf";
import { type Duration, type Timestamp, timestampDate, timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { type Action, ActionCall, ActionErrorSchema, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { type State, StateSchema } from "../../gen/plinth/v1/state_service_pb.ts";
import { invalid, notFound, PlinthError } from "../errors.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import type { ModelMeta, ModelRecord, Store } from "../store/store.ts";
import { ActionQueue } from "./action-queue.ts";
import { ActionRun, cancelUnfinishedDataAccess, type RunContext } from "./action-run.ts";
import { argWithoutBlobs } from "../blobs.ts";
import { validateArgs } from "./args.ts";
import { CancelReason } from "./cancel-reason.ts";
import { newId } from "./ids.ts";
import { ModelLocks } from "./model-locks.ts";
import type { PluginRegistry } from "./plugins.ts";
import { StateHub } from "./state-hub.ts";

/** How often the action history's retention is applied. */
const PRUNE_PERIOD_MS = 10 * 60 * 1000;

export interface EngineOptions {
  store: Store;
  processes: ProcessManager;
  plugins: PluginRegistry;
  logger: Logger;
  /** Queued actions at most; beyond, new actions are refused with RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** State changes kept for watchers that resume. */
  stateHistory: number;
  /** Minimum time between two progress revisions of one action. */
  progressIntervalMs: number;
  /** Finished actions stay in the live state until there are more than this many... */
  retainActions: number;
  /** ...or they ended longer ago than this. */
  retainActionsMs: number;
}

export class Engine {
  readonly hub: StateHub;
  readonly #o: EngineOptions;
  readonly #locks = new ModelLocks();
  /** Every model's metadata: the live state. Instance bytes stay in the store. */
  readonly #models = new Map<string, Model>();
  /** Actions in the live state: running ones and recently finished ones. */
  readonly #actions = new Map<string, Action>();
  readonly #running = new Map<string, ActionRun>();
  /** Finished actions still in the live state, with when they ended, oldest first. */
  readonly #finished = new Map<string, number>();
  readonly #queue: ActionQueue;
  #closing = false;
  #pruneTimer: ReturnType<typeof setInterval> | undefined;

  readonly #runContext: RunContext;

  private constructor(options: EngineOptions) {
    this.#o = options;
    this.hub = new StateHub(options.stateHistory);
    this.#queue = new ActionQueue(options.maxQueue);
    this.#runContext = {
      store: options.store,
      processes: options.processes,
      plugins: options.plugins,
      locks: this.#locks,
      queue: this.#queue,
      logger: options.logger,
      progressIntervalMs: options.progressIntervalMs,
      changed: (action, live) => this.#changed(action, live),
      storeModel: (record) => this.#storeModel(record),
    };
  }

  /**
   * Loads the models' metadata (instance bytes stay in the store until asked for) and
   * marks every action the previous server left unfinished as failed: interrupted.
   */
  static async open(options: EngineOptions): Promise<Engine> {
    const engine = new Engine(options);
    const { store, logger } = options;
    for (const meta of await store.allModels()) {
      engine.#models.set(meta.id, modelMessage(meta));
    }
    const interrupted = await store.unfinishedActions();
    for (const action of interrupted) {
      action.status = ActionStatus.FAILED;
      action.error = create(ActionErrorSchema, { code: "interrupted", message: "interrupted by server restart" });
      cancelUnfinishedDataAccess(action);
      action.endTime = timestampNow();
      action.updateTime = action.endTime;
      action.queuePosition = 0;
      await store.putAction(action);
    }
    if (interrupted.length > 0) logger.warn({ actions: interrupted.map((a) => a.id) }, "actions interrupted by the restart marked failed");
    await engine.#pruneHistory();
    engine.#pruneTimer = setInterval(() => void engine.#pruneHistory(), PRUNE_PERIOD_MS);
    engine.#pruneTimer.unref();
    return engine;
  }

  /** Applies the action history's retention; errors are logged, not thrown. */
  async #pruneHistory(): Promise<void> {
    try {
      const removed = await this.#o.store.pruneActions(new Date());
      if (removed > 0) this.#o.logger.debug({ removed }, "pruned the action history");
    } catch (error) {
      this.#o.logger.error({ err: error }, "pruning the action history failed");
    }
  }

  get plugins(): PluginRegistry {
    return this.#o.plugins;
  }

  // ---- models ----

  async getModel(modelId: string, includeInstance: boolean, revision = 0n): Promise<Model> {
    requireId("model_id", modelId);
    const record = await this.#o.store.getModel(modelId, revision || undefined);
    if (!record) {
      const latest = this.#models.get(modelId);
      if (latest && revision) {
        throw notFound(`model ${modelId} has no revision ${revision}: it keeps revisions ${latest.oldestRevision} to ${latest.revision}`);
      }
      throw notFound(`model ${modelId} not found`);
    }
    return modelMessage(record, includeInstance ? record.instance : undefined);
  }

  async listModels(query: { modelType: string; pageSize: number; pageToken: string }): Promise<{ models: Model[]; next: string }> {
    const limit = pageSize(query.pageSize);
    const records = await this.#o.store.listModels({
      limit: limit + 1,
      ...(query.modelType ? { modelType: query.modelType } : {}),
      ...(query.pageToken ? { afterId: query.pageToken } : {}),
    });
    const page = records.slice(0, limit);
    return { models: page.map((r) => modelMessage(r)), next: records.length > limit ? page.at(-1)!.id : "" };
  }

  async addInstance(modelType: string, instance: Uint8Array): Promise<Model> {
    this.#refuseIfClosing();
    this.#modelPlugin(modelType);
    const now = new Date();
    return this.#storeModel({
      id: newId("m"),
      modelType,
      revision: 1n,
      createTime: now,
      updateTime: now,
      instance,
      instanceSize: instance.byteLength,
      actionId: "",
      oldestRevision: 1n,
    });
  }

  async updateInstance(modelId: string, instance: Uint8Array, signal?: AbortSignal): Promise<Model> {
    this.#refuseIfClosing();
    requireId("model_id", modelId);
    if (!this.#models.has(modelId)) throw notFound(`model ${modelId} not found`);
    // Serialized with the model's running calls, like any other change of it.
    using _lock = await this.#locks.acquire(modelId, signal);
    const record = await this.#o.store.getModel(modelId);
    if (!record) throw notFound(`model ${modelId} not found`);
    return this.#storeModel({
      ...record,
      revision: record.revision + 1n,
      updateTime: new Date(),
      instance,
      instanceSize: instance.byteLength,
      actionId: "",
    });
  }

  async deleteModel(modelId: string): Promise<void> {
    requireId("model_id", modelId);
    if (!this.#models.has(modelId)) throw notFound(`model ${modelId} not found`);
    const busy = this.#locks.users(modelId);
    if (busy > 0) {
      throw new PlinthError(
        "failed_precondition",
        `model ${modelId} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
      );
    }
    await this.#o.store.deleteModel(modelId);
    this.#models.delete(modelId);
    this.hub.publish({ kind: "model_deleted", modelId });
  }

  // ---- actions ----

  createInstance(modelType: string, call: ActionRequest): Action {
    this.#modelPlugin(modelType);
    return this.#start(ActionCall.CREATE_INSTANCE, "", modelType, call);
  }

  fit(modelId: string, call: ActionRequest): Action {
    return this.#start(ActionCall.FIT, modelId, this.#modelOf(modelId).modelType, call);
  }

  predict(modelId: string, call: ActionRequest): Action {
    return this.#start(ActionCall.PREDICT, modelId, this.#modelOf(modelId).modelType, call);
  }

  async getAction(actionId: string): Promise<Action> {
    requireId("action_id", actionId);
    const live = this.#actions.get(actionId);
    if (live) return this.#snapshot(live);
    const stored = await this.#o.store.getAction(actionId);
    if (!stored) throw notFound(`action ${actionId} not found`);
    return stored;
  }

  async listActions(query: {
    modelId: string;
    statuses: ActionStatus[];
    pageSize: number;
    pageToken: string;
    createdAfter?: Timestamp | undefined;
    createdBefore?: Timestamp | undefined;
  }): Promise<{ actions: Action[]; next: string }> {
    const limit = pageSize(query.pageSize);
    const actions = await this.#o.store.listActions({
      limit: limit + 1,
      ...(query.modelId ? { modelId: query.modelId } : {}),
      ...(query.statuses.length ? { statuses: query.statuses } : {}),
      ...(query.pageToken ? { beforeId: query.pageToken } : {}),
      ...(query.createdAfter ? { createdAfter: timestampDate(query.createdAfter) } : {}),
      ...(query.createdBefore ? { createdBefore: timestampDate(query.createdBefore) } : {}),
    });
    const page = actions.slice(0, limit);
    return { actions: page, next: actions.length > limit ? page.at(-1)!.id : "" };
  }

  /** The action once it has ended; rejects with the signal's reason if that comes first. */
  async waitAction(actionId: string, signal?: AbortSignal): Promise<Action> {
    const running = this.#running.get(actionId);
    if (!running) return this.getAction(actionId);
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      void running.done.then(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
    });
    return this.#snapshot(running.action);
  }

  /** Cancels the action and answers once it has ended. An ended action is returned as it is. */
  async cancelAction(actionId: string): Promise<Action> {
    const running = this.#running.get(actionId);
    if (!running) return this.getAction(actionId);
    running.cancel(new CancelReason("CancelAction", "cancelled by CancelAction"));
    await running.done;
    return this.#snapshot(running.action);
  }

  // ---- state ----

  getState(): State {
    return create(StateSchema, {
      revision: this.hub.revision,
      models: [...this.#models.values()].map((m) => clone(ModelSchema, m)),
      actions: [...this.#actions.values()].map((a) => this.#snapshot(a)),
    });
  }

  /** Refuses new actions, cancels running ones and waits for them to end. */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#pruneTimer);
    for (const running of this.#running.values()) {
      running.cancel(new CancelReason("shutdown", "the server is shutting down"));
    }
    await Promise.all([...this.#running.values()].map((r) => r.done));
  }

  // ---- internals ----

  #refuseIfClosing(): void {
    if (this.#closing) throw new PlinthError("shutting_down", "the server is shutting down; retry on another instance");
  }

  #modelPlugin(modelType: string) {
    if (!modelType) throw invalid("model_type is required, e.g. \"systest.Model\" (ListPlugins lists them)");
    const plugin = this.#o.plugins.modelType(modelType);
    if (!plugin) {
      const known = this.#o.plugins.modelTypeNames().join(", ") || "none";
      throw invalid(`model_type "${modelType}" is not declared by any loaded plugin; known model types: ${known}`);
    }
    return plugin;
  }

  #modelOf(modelId: string): Model {
    requireId("model_id", modelId);
    const model = this.#models.get(modelId);
    if (!model) throw notFound(`model ${modelId} not found`);
    return model;
  }

  async #storeModel(record: ModelRecord): Promise<Model> {
    const model = modelMessage(await this.#o.store.putModel(record));
    this.#models.set(record.id, model);
    this.hub.publish({ kind: "model_upserted", model: clone(ModelSchema, model) });
    return clone(ModelSchema, model);
  }

  #start(call: ActionCall, modelId: string, modelType: string, request: ActionRequest): Action {
    this.#refuseIfClosing();
    const { args, kwargs, timeout } = request;
    const nodes = validateArgs(args, kwargs, (name) => this.#o.plugins.dataAccess(name) !== undefined);
    const timeoutMs = timeout ? timeoutMillis(timeout) : undefined;
    this.#queue.admit();
    const now = timestampNow();
    const action = create(ActionSchema, {
      id: newId("a"),
      call,
      modelId,
      modelType,
      // As sent, without blobs: the run passes the full arguments to the plugin.
      args: args.map(argWithoutBlobs),
      kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, argWithoutBlobs(v)])),
      status: ActionStatus.QUEUED,
      dataAccess: nodes.map((n) => ({ argument: n.path, name: n.access.name, status: ActionStatus.QUEUED })),
      createTime: now,
      updateTime: now,
      ...(timeout ? { timeout } : {}),
    });
    this.#actions.set(action.id, action);
    const run = new ActionRun(this.#runContext, action, { args, kwargs }, timeoutMs);
    this.#running.set(action.id, run);
    void run.done.finally(() => {
      this.#running.delete(action.id);
      this.#finished.set(action.id, performance.now());
      this.#retire();
    });
    return this.#snapshot(action);
  }

  /** A copy of the action to hand out, its queue position as of now. */
  #snapshot(action: Action): Action {
    action.queuePosition = this.#queue.position(action.id);
    return clone(ActionSchema, action);
  }

  /** Publishes the action with a new revision and, unless `live`, stores it. */
  #changed(action: Action, live = false): void {
    action.updateTime = timestampNow();
    const snapshot = this.#snapshot(action);
    if (!live) {
      void this.#o.store.putAction(snapshot).catch((error: unknown) => {
        this.#o.logger.error({ err: error, actionId: action.id }, "storing an action failed");
      });
    }
    this.hub.publish({ kind: "action_upserted", action: snapshot });
  }

  /**
   * Drops finished actions from the live state beyond the retention count and age,
   * oldest first: amortized O(1) per action, whatever the retention.
   */
  #retire(): void {
    const { retainActions, retainActionsMs } = this.#o;
    const cutoff = performance.now() - retainActionsMs;
    for (const [id, endedAt] of this.#finished) {
      if (this.#finished.size <= retainActions && endedAt >= cutoff) break;
      this.#finished.delete(id);
      this.#actions.delete(id);
    }
  }
}

/** The arguments and options of CreateInstance, Fit and Predict. */
export interface ActionRequest {
  args: Arg[];
  kwargs: Record<string, Arg>;
  timeout?: Duration | undefined;
}

function timeoutMillis(timeout: Duration): number {
  const ms = Number(timeout.seconds) * 1000 + timeout.nanos / 1e6;
  if (!(ms > 0) || ms > 2 ** 31 - 1) throw invalid(`timeout: must be between 1 ms and 24 days, got ${ms} ms`);
  return ms;
}

function requireId(field: string, value: string): void {
  if (!value) throw invalid(`${field} is required`);
}

function pageSize(requested: number): number {
  if (requested > 1000) throw invalid(`page_size: at most 1000, got ${requested}`);
  return requested || 100;
}

/** The model as the API shows it; instance bytes only when given. */
export function modelMessage(meta: ModelMeta, instance?: Uint8Array): Model {
  return create(ModelSchema, {
    id: meta.id,
    modelType: meta.modelType,
    revision: meta.revision,
    createTime: timestampFromDate(meta.createTime),
    updateTime: timestampFromDate(meta.updateTime),
    instanceSize: BigInt(meta.instanceSize),
    actionId: meta.actionId,
    oldestRevision: meta.oldestRevision,
    ...(instance ? { instance } : {}),
  });
}
