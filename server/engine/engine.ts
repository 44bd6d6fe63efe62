/**
 * The engine: models, actions and their lifecycle. Calls on one model run one at a
 * time (ModelLocks); every plugin call goes through the ProcessManager; every change
 * is stored and published on the StateHub with a new revision.
 */
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, timestampNow, type Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import {
  type Action,
  ActionCall,
  type ActionError,
  ActionErrorSchema,
  ActionResultSchema,
  ActionSchema,
  ActionStatus,
  type DataAccessProgress,
} from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { type State, StateSchema } from "../../gen/plinth/v1/state_service_pb.ts";
import { CallKind, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { invalid, notFound, PlinthError } from "../errors.ts";
import { ChildFailure } from "../process/child.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import type { ModelMeta, ModelRecord, Store } from "../store/store.ts";
import { nullValue, toArg, validateArgs } from "./args.ts";
import { resolveArgs } from "./data-access.ts";
import { newId } from "./ids.ts";
import { ModelLocks } from "./model-locks.ts";
import type { PluginRegistry } from "./plugins.ts";
import { StateHub } from "./state-hub.ts";

export interface EngineOptions {
  store: Store;
  processes: ProcessManager;
  plugins: PluginRegistry;
  logger: Logger;
  /** Finished actions stay in the live state until there are more than this many... */
  retainActions: number;
  /** ...or they ended longer ago than this. */
  retainActionsMs: number;
}

/** Why an action failed, as recorded on it. */
class ActionFailure extends Error {
  readonly error: ActionError;
  readonly logTail: string[];
  constructor(error: MessageInitShape<typeof ActionErrorSchema>, logTail: string[] = []) {
    super(error.message);
    this.error = create(ActionErrorSchema, error);
    this.logTail = logTail;
  }
}

const ENDED = new Set([ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED]);

export function isEnded(action: Action): boolean {
  return ENDED.has(action.status);
}

interface Running {
  action: Action;
  controller: AbortController;
  done: Promise<void>;
}

export class Engine {
  readonly hub = new StateHub();
  readonly #o: EngineOptions;
  readonly #locks = new ModelLocks();
  /** Every model's metadata: the live state. Instance bytes stay in the store. */
  readonly #models = new Map<string, Model>();
  /** Actions in the live state: running ones and recently finished ones. */
  readonly #actions = new Map<string, Action>();
  readonly #running = new Map<string, Running>();
  #closing = false;

  private constructor(options: EngineOptions) {
    this.#o = options;
  }

  static async open(options: EngineOptions): Promise<Engine> {
    const engine = new Engine(options);
    for (const meta of await options.store.allModels()) {
      engine.#models.set(meta.id, modelMessage(meta));
    }
    return engine;
  }

  get plugins(): PluginRegistry {
    return this.#o.plugins;
  }

  // ---- models ----

  async getModel(modelId: string, includeInstance: boolean): Promise<Model> {
    requireId("model_id", modelId);
    const record = await this.#o.store.getModel(modelId);
    if (!record) throw notFound(`model ${modelId} not found`);
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

  createInstance(modelType: string, args: Arg[], kwargs: Record<string, Arg>): Action {
    this.#modelPlugin(modelType);
    return this.#start(ActionCall.CREATE_INSTANCE, "", modelType, args, kwargs);
  }

  fit(modelId: string, args: Arg[], kwargs: Record<string, Arg>): Action {
    return this.#start(ActionCall.FIT, modelId, this.#modelOf(modelId).modelType, args, kwargs);
  }

  predict(modelId: string, args: Arg[], kwargs: Record<string, Arg>): Action {
    return this.#start(ActionCall.PREDICT, modelId, this.#modelOf(modelId).modelType, args, kwargs);
  }

  async getAction(actionId: string): Promise<Action> {
    requireId("action_id", actionId);
    const live = this.#actions.get(actionId);
    if (live) return clone(ActionSchema, live);
    const stored = await this.#o.store.getAction(actionId);
    if (!stored) throw notFound(`action ${actionId} not found`);
    return stored;
  }

  async listActions(query: {
    modelId: string;
    statuses: ActionStatus[];
    pageSize: number;
    pageToken: string;
  }): Promise<{ actions: Action[]; next: string }> {
    const limit = pageSize(query.pageSize);
    const actions = await this.#o.store.listActions({
      limit: limit + 1,
      ...(query.modelId ? { modelId: query.modelId } : {}),
      ...(query.statuses.length ? { statuses: query.statuses } : {}),
      ...(query.pageToken ? { beforeId: query.pageToken } : {}),
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
    return clone(ActionSchema, running.action);
  }

  /** Cancels the action and answers once it has ended. An ended action is returned as it is. */
  async cancelAction(actionId: string): Promise<Action> {
    const running = this.#running.get(actionId);
    if (!running) return this.getAction(actionId);
    running.controller.abort(new PlinthError("cancelled", "cancelled by CancelAction"));
    await running.done;
    return clone(ActionSchema, running.action);
  }

  // ---- state ----

  getState(): State {
    return create(StateSchema, {
      revision: this.hub.revision,
      models: [...this.#models.values()].map((m) => clone(ModelSchema, m)),
      actions: [...this.#actions.values()].map((a) => clone(ActionSchema, a)),
    });
  }

  /** Refuses new actions, cancels running ones and waits for them to end. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const running of this.#running.values()) {
      running.controller.abort(new PlinthError("shutting_down", "the server is shutting down"));
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
    await this.#o.store.putModel(record);
    const model = modelMessage(record);
    this.#models.set(record.id, model);
    this.hub.publish({ kind: "model_upserted", model: clone(ModelSchema, model) });
    return clone(ModelSchema, model);
  }

  #start(call: ActionCall, modelId: string, modelType: string, args: Arg[], kwargs: Record<string, Arg>): Action {
    this.#refuseIfClosing();
    const nodes = validateArgs(args, kwargs, (name) => this.#o.plugins.dataAccess(name) !== undefined);
    const now = timestampNow();
    const action = create(ActionSchema, {
      id: newId("a"),
      call,
      modelId,
      modelType,
      args,
      kwargs,
      status: ActionStatus.QUEUED,
      dataAccess: nodes.map((n) => ({ argument: n.path, name: n.access.name, status: ActionStatus.QUEUED })),
      createTime: now,
      updateTime: now,
    });
    const controller = new AbortController();
    const running: Running = { action, controller, done: Promise.resolve() };
    this.#running.set(action.id, running);
    this.#actions.set(action.id, action);
    this.#changed(action);
    running.done = this.#run(action, controller.signal).finally(() => {
      this.#running.delete(action.id);
      this.#retire();
    });
    return clone(ActionSchema, action);
  }

  /** Stores the action and publishes it with a new revision. */
  #changed(action: Action): void {
    action.updateTime = timestampNow();
    void this.#o.store.putAction(action).catch((error: unknown) => {
      this.#o.logger.error({ err: error, actionId: action.id }, "storing an action failed");
    });
    this.hub.publish({ kind: "action_upserted", action: clone(ActionSchema, action) });
  }

  async #run(action: Action, signal: AbortSignal): Promise<void> {
    const { processes } = this.#o;
    const plugin = this.#modelPlugin(action.modelType);
    try {
      using _lock = action.modelId ? await this.#locks.acquire(action.modelId, signal) : undefined;
      action.startTime = timestampNow();
      const model = action.modelId ? await this.#o.store.getModel(action.modelId) : undefined;
      if (action.modelId && !model) throw new ActionFailure({ code: "not_found", message: `model ${action.modelId} was deleted` });

      const resolved = await this.#resolveDataAccess(action, signal);
      const outcome = await processes.call(
        plugin.target,
        {
          kind: callKinds[action.call],
          target: action.modelType,
          instance: model?.instance ?? new Uint8Array(),
          args: resolved.args,
          kwargs: resolved.kwargs,
        },
        {
          signal,
          onStart: () => {
            action.status = ActionStatus.EXECUTING;
            this.#changed(action);
          },
          onProgress: (state, logTail) => {
            action.state = state;
            action.logTail = logTail;
            this.#changed(action);
          },
        },
      );
      action.logTail = outcome.logTail;
      action.status = ActionStatus.STORING;
      this.#changed(action);
      const { result } = outcome;
      const stored = result.instance === undefined ? undefined : await this.#storeRevision(action, model, result.instance);
      action.result = create(ActionResultSchema, {
        ...(stored ? { model: stored } : {}),
        ...(action.call === ActionCall.PREDICT ? { prediction: toArg(result.value) } : {}),
      });
      action.status = ActionStatus.SUCCEEDED;
    } catch (error) {
      this.#fail(action, error, signal);
    }
    action.endTime = timestampNow();
    this.#changed(action);
  }

  #fail(action: Action, error: unknown, signal: AbortSignal): void {
    const cancelled = signal.aborted || (error instanceof ChildFailure && error.code === "cancelled");
    if (cancelled) {
      const reason: unknown = signal.reason;
      action.status = ActionStatus.CANCELLED;
      action.error = create(ActionErrorSchema, {
        code: PlinthError.is(reason) ? reason.kind : "cancelled",
        message: PlinthError.is(reason) ? reason.message : "the action was cancelled",
      });
      if (error instanceof ChildFailure) action.logTail = error.logTail;
    } else if (error instanceof ActionFailure) {
      action.status = ActionStatus.FAILED;
      action.error = error.error;
      if (error.logTail.length) action.logTail = error.logTail;
    } else if (error instanceof ChildFailure) {
      action.status = ActionStatus.FAILED;
      action.error = create(ActionErrorSchema, { code: error.code, message: error.message, stack: error.pluginStack });
      action.logTail = error.logTail;
    } else if (PlinthError.is(error)) {
      action.status = ActionStatus.FAILED;
      action.error = create(ActionErrorSchema, { code: error.kind, message: error.message });
    } else {
      this.#o.logger.error({ err: error, actionId: action.id }, "action failed with an internal error");
      action.status = ActionStatus.FAILED;
      action.error = create(ActionErrorSchema, { code: "internal", message: "internal error; see the server log" });
    }
    // Data access that never got to finish was cancelled with its action.
    for (const entry of action.dataAccess) {
      if (!ENDED.has(entry.status)) entry.status = ActionStatus.CANCELLED;
    }
  }

  async #storeRevision(action: Action, model: ModelRecord | undefined, instance: Uint8Array): Promise<Model> {
    const now = new Date();
    const change = { updateTime: now, instance, instanceSize: instance.byteLength, actionId: action.id };
    const record: ModelRecord = model
      ? { ...model, ...change, revision: model.revision + 1n }
      : { ...change, id: newId("m"), modelType: action.modelType, revision: 1n, createTime: now };
    if (!model) action.modelId = record.id;
    return this.#storeModel(record);
  }

  async #resolveDataAccess(action: Action, signal: AbortSignal) {
    if (action.dataAccess.length === 0) return resolveArgs(action.args, action.kwargs, unreachable, signal);
    action.status = ActionStatus.ACCESSING_DATA;
    this.#changed(action);
    const entries = new Map(action.dataAccess.map((e) => [e.argument, e]));
    const resolved = await resolveArgs(
      action.args,
      action.kwargs,
      async (path, name, args, callSignal) => this.#callDataAccess(action, entries.get(path)!, name, args, callSignal),
      signal,
    );
    // Waiting for a child slot again, now for the main call.
    action.status = ActionStatus.QUEUED;
    this.#changed(action);
    return resolved;
  }

  async #callDataAccess(
    action: Action,
    entry: DataAccessProgress,
    name: string,
    args: { args: Value[]; kwargs: Record<string, Value> },
    signal: AbortSignal,
  ): Promise<Value> {
    const plugin = this.#o.plugins.dataAccess(name)!;
    const update = (change: Partial<DataAccessProgress>) => {
      Object.assign(entry, change);
      this.#changed(action);
    };
    try {
      const outcome = await this.#o.processes.call(
        plugin.target,
        { kind: CallKind.DATA_ACCESS, target: name, args: args.args, kwargs: args.kwargs },
        {
          signal,
          onStart: () => update({ status: ActionStatus.EXECUTING, startTime: timestampNow() }),
          onProgress: (state: JsonValuePb | undefined) => update(state ? { state } : {}),
        },
      );
      update({ status: ActionStatus.SUCCEEDED, endTime: timestampNow() });
      return outcome.result.value ?? nullValue();
    } catch (error) {
      const cancelled = signal.aborted && !(error instanceof ChildFailure && error.code !== "cancelled");
      const message = error instanceof Error ? error.message : String(error);
      update({
        status: cancelled ? ActionStatus.CANCELLED : ActionStatus.FAILED,
        endTime: timestampNow(),
        error: create(ActionErrorSchema, {
          code: error instanceof ChildFailure ? error.code : "cancelled",
          message,
          stack: error instanceof ChildFailure ? error.pluginStack : "",
        }),
      });
      if (cancelled) throw error;
      throw new ActionFailure(
        {
          code: "data_access_failed",
          message: `data access "${name}" for ${entry.argument} failed: ${message}`,
          stack: error instanceof ChildFailure ? error.pluginStack : "",
        },
        error instanceof ChildFailure ? error.logTail : [],
      );
    }
  }

  /** Drops finished actions from the live state beyond the retention count and age. */
  #retire(): void {
    const { retainActions, retainActionsMs } = this.#o;
    const finished = [...this.#actions.values()].filter(isEnded);
    const cutoff = Date.now() - retainActionsMs;
    let excess = finished.length - retainActions;
    for (const action of finished) {
      const old = action.endTime && timestampDate(action.endTime).getTime() < cutoff;
      if (excess > 0 || old) {
        this.#actions.delete(action.id);
        excess--;
      }
    }
  }
}

const callKinds: Record<ActionCall, CallKind> = {
  [ActionCall.UNSPECIFIED]: CallKind.UNSPECIFIED,
  [ActionCall.CREATE_INSTANCE]: CallKind.INSTANTIATE,
  [ActionCall.FIT]: CallKind.FIT,
  [ActionCall.PREDICT]: CallKind.PREDICT,
};

function unreachable(): never {
  throw new Error("no data-access arguments to resolve");
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
    ...(instance ? { instance } : {}),
  });
}
