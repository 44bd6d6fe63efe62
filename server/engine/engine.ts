/**
 * The engine: the API that the transports (server/rpc) call. It checks each request,
 * admits new actions into the live state (within max_queue, per caller, max_inflight_mb)
 * and hands them to its Runner — one server's LocalRunner, or a cluster's — which stores
 * and runs them; it answers reads from the live table and the store, waits, cancels and
 * watches; it closes in order. What happens to an action once admitted is the runner's
 * (and the action lifecycle's) business; the engine never knows which runner it has.
 */
import type { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import { type Duration, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import {
  type Action,
  ActionCall,
  ActionSchema,
  ActionStatus,
  ActionView,
  DataAccessProgressSchema,
  type RetryPolicy,
} from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import type { JsonForm } from "../../gen/plinth/v1/engine_service_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import type { WatchStateResponse } from "../../gen/plinth/v1/state_service_pb.ts";
import { cut, invalid, notFound, PlinthError, quote } from "../errors.ts";
import { modelMessage } from "../store/model-message.ts";
import type { ModelMeta, ModelRecord, Store } from "../store/store.ts";
import { ActionFailure } from "./action-failure.ts";
import { callKinds } from "./action-lifecycle.ts";
import { type ArgLimits, parseArgs } from "./args.ts";
import { ANONYMOUS, type Caller, hasRole } from "./caller.ts";
import { CancelReason } from "./cancel-reason.ts";
import { checkRequest } from "./check-args.ts";
import { newId } from "./ids.ts";
import { isEnded, type LiveTable } from "./live-table.ts";
import type { ModelCache } from "./model-cache.ts";
import type { PluginRegistry } from "./plugins.ts";
import type { BatchEvents } from "./predict-batches.ts";
import { priorityOf } from "./priority.ts";
import * as reads from "./reads.ts";
import { changeFingerprint, checkRequestId, fingerprint, RequestIds } from "./request-ids.ts";
import { jsonFormOf, requireId, timeoutMillis } from "./requests.ts";
import { effectiveRetry } from "./retry-policy.ts";
import type { Runner, ServerInfo } from "./runner.ts";
import type { StateEvent, StatePublisher } from "./state-publisher.ts";
import { argsView, type ViewLimits } from "./views.ts";
import { mapped, seesAll, shownState, shownTo, type Visibility } from "./visibility.ts";
import { type StateFilter, Watchers } from "./watch.ts";

/** How often the action history's retention is applied. */
const PRUNE_PERIOD_MS = 10 * 60 * 1000;
/** How often ended actions are checked against the live state's retention by age. */
const RETIRE_PERIOD_MS = 60 * 1000;

export interface EngineParts {
  store: Store;
  plugins: PluginRegistry;
  logger: Logger;
  table: LiveTable;
  publisher: StatePublisher;
  runner: Runner;
  /** Model instances by revision, shared with the runner. */
  instances: ModelCache;
  /** What batched predicts report as their batches go: for metrics. */
  serving: EventEmitter<BatchEvents>;
  limits: Omit<ArgLimits, "keepValueBytes">;
  views: ViewLimits;
  /** Responses that list things (GetState, ListActions, snapshots) stop adding at this size. */
  pageBytes: number;
  /** A watcher this far behind gets a fresh snapshot instead. */
  watcherQueueBytes: number;
  /** engine.progress_interval 0: a WatchAction stream gets every update of its action, none coalesced. */
  everyUpdate?: boolean | undefined;
  /** Whose actions a caller sees in full (server.auth.visibility; visibility.ts). */
  visibility: Visibility;
}

export interface EngineStats {
  revision: bigint;
  /** Actions waiting for their model, a child or their data. */
  waiting: number;
  /** Listeners on the live state: streams, tests. */
  subscribers: number;
  /** Payload bytes of the actions not yet ended... */
  inflightBytes: number;
  /** ...and of the ended ones still live. */
  retainedBytes: number;
  /** Open WatchState streams, and the changes (and bytes) waiting to be sent to them. */
  watchers: number;
  pending: number;
  pendingBytes: number;
  /** Listeners on the signal that ends every stream at shutdown: one per open stream, none left by closed ones. */
  stopListeners: number;
}

/** The arguments and options of CreateInstance, Fit and Predict. */
export interface ActionRequest {
  args: Arg[];
  kwargs: Record<string, Arg>;
  timeout?: Duration | undefined;
  jsonForm?: JsonForm;
  /** Makes the call idempotent per caller (request-ids.ts). */
  requestId?: string;
  /** 1 (highest) to 5; 0 or unset: 3. */
  priority?: number;
  /** How a failed call runs again, over its plugin's policy (retry-policy.ts). */
  retry?: RetryPolicy | undefined;
  /** The caller waits for the end (the request's `wait`): nothing is acknowledged before it. */
  wait?: boolean;
}

/** Who asks for a change of a model, and its request_id (request-ids.ts). */
export interface ChangeOptions {
  caller?: Caller;
  requestId?: string;
}

export class Engine {
  readonly #o: EngineParts;
  readonly #table: LiveTable;
  readonly #runner: Runner;
  readonly #readers: reads.Readers;
  readonly #watchers: Watchers;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  readonly #requestIds: RequestIds;
  readonly #closed = new AbortController();
  #closing = false;
  /** Aborted once the server has stopped what runs here: the waits still open end. */
  readonly #stopped = new AbortController();
  /** Set while the server drains: new actions are refused, what runs goes on. */
  #draining: { graceSeconds: number } | undefined;

  private constructor(parts: EngineParts) {
    this.#o = parts;
    this.#table = parts.table;
    this.#runner = parts.runner;
    this.#readers = { table: parts.table, store: parts.store, views: parts.views, pageBytes: parts.pageBytes };
    this.#watchers = new Watchers(parts, parts.store, {
      pageBytes: parts.pageBytes,
      queueBytes: parts.watcherQueueBytes,
      everyUpdate: parts.everyUpdate ?? false,
    });
    this.#requestIds = new RequestIds(parts.store, (id) => this.getAction(id, ActionView.BASIC).catch(() => undefined));
  }

  /** Opens the runner (the state it starts from), applies the history's retention, and keeps applying it. */
  static async open(parts: EngineParts): Promise<Engine> {
    const engine = new Engine(parts);
    await parts.runner.open();
    await engine.#pruneHistory();
    engine.#timers.push(
      setInterval(() => void engine.#pruneHistory(), PRUNE_PERIOD_MS),
      setInterval(() => engine.#table.retire(), RETIRE_PERIOD_MS),
    );
    for (const timer of engine.#timers) timer.unref();
    return engine;
  }

  get plugins(): PluginRegistry {
    return this.#o.plugins;
  }

  /** The servers of the cluster and what each runs; empty without one. */
  servers(): Promise<ServerInfo[]> {
    return this.#runner.servers();
  }

  /** What the live state and its watchers hold: for tests and metrics. */
  /** Each batch of predicts as it goes to a child: its size, and how long each item waited for it. */
  get serving(): EventEmitter<BatchEvents> {
    return this.#o.serving;
  }

  get stats(): EngineStats {
    const { inflight, ended } = this.#table.bytes;
    return {
      revision: this.#o.publisher.revision,
      waiting: this.#table.waiting,
      subscribers: this.#o.publisher.subscribers,
      inflightBytes: inflight,
      retainedBytes: ended,
      ...this.#watchers.stats,
    };
  }

  /** Every change from now on, synchronously: for tests and metrics. Returns the unsubscribe. */
  subscribe(listener: (event: StateEvent) => void): () => void {
    return this.#o.publisher.subscribe(listener);
  }

  // ---- models ----

  getModel(modelId: string, includeInstance: boolean, revision = 0n): Promise<Model> {
    return reads.getModel(this.#readers, modelId, includeInstance, revision);
  }

  listModels(query: { modelType: string; pageSize: number; pageToken: string }): Promise<{ models: Model[]; next: string }> {
    return reads.listModels(this.#readers, query);
  }

  async addInstance(modelType: string, instance: Uint8Array, options: ChangeOptions = {}): Promise<Model> {
    this.#refuseIfClosing();
    await this.#requireModelType(modelType);
    const add = async () => {
      const model = await this.#addInstance(modelType, instance);
      return { value: model, outcome: `AddInstance of model ${model.id}` };
    };
    return this.#changeOnce(options, changeFingerprint("AddInstance", modelType, instance), add, (outcome) =>
      this.getModel(outcomeModel(outcome), false),
    );
  }

  #addInstance(modelType: string, instance: Uint8Array): Promise<Model> {
    const now = new Date();
    const record: ModelRecord = {
      id: newId("m"),
      modelType,
      revision: 1n,
      createTime: now,
      updateTime: now,
      instance,
      instanceSize: instance.byteLength,
      actionId: "",
      oldestRevision: 1n,
    };
    return this.#stored(record, () => this.#o.store.putModel(record));
  }

  /** The instance as the model's next revision, after the calls on the model queued before this. */
  async updateInstance(modelId: string, instance: Uint8Array, signal?: AbortSignal, options: ChangeOptions = {}): Promise<Model> {
    this.#refuseIfClosing();
    await this.#modelOf(modelId);
    const update = async () => {
      const model = await this.#stored({ instance }, () => this.#runner.updateModel(modelId, instance, signal));
      return { value: model, outcome: `UpdateInstance of model ${model.id} to revision ${model.revision}` };
    };
    // The revision it stored while kept; the model as it is now after.
    const answer = (outcome: string) =>
      this.getModel(modelId, false, BigInt(/revision (\d+)$/.exec(outcome)?.[1] ?? 0)).catch(() => this.getModel(modelId, false));
    return this.#changeOnce(options, changeFingerprint("UpdateInstance", modelId, instance), update, answer);
  }

  /** Deletes the model; again with the request_id that deleted it, answers as it did. */
  async deleteModel(modelId: string, options: ChangeOptions = {}): Promise<void> {
    const remove = async () => ({ value: await this.#deleteModel(modelId), outcome: `DeleteModel of model ${modelId}` });
    await this.#changeOnce(options, changeFingerprint("DeleteModel", modelId), remove, async () => true);
  }

  async #deleteModel(modelId: string): Promise<true> {
    await this.#modelOf(modelId);
    const busy = this.#runner.busy(modelId);
    if (busy > 0) {
      throw new PlinthError(
        "failed_precondition",
        `model ${modelId} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
      );
    }
    await this.#o.store.deleteModel(modelId);
    this.#o.instances.delete(modelId);
    this.#table.deleteModel(modelId);
    return true;
  }

  /** `run`, once per request_id when the options carry one. */
  async #changeOnce<T>(
    options: ChangeOptions,
    digest: string,
    run: () => Promise<{ value: T; outcome: string }>,
    answer: (outcome: string) => Promise<T>,
  ): Promise<T> {
    const { requestId, caller = ANONYMOUS } = options;
    if (!requestId) return (await run()).value;
    checkRequestId(requestId);
    return this.#requestIds.onceDone({ createdBy: caller.name, requestId, fingerprint: digest }, run, answer, this.#closed.signal);
  }

  /** A model revision `store` stores: cached with its instance, and in the live table. */
  async #stored(record: { instance: Uint8Array }, store: () => Promise<ModelMeta>): Promise<Model> {
    let meta: ModelMeta;
    try {
      meta = await store();
    } catch (error) {
      if (PlinthError.is(error)) throw error;
      throw new ActionFailure({ code: "store_failed", message: `the store could not record the model: ${(error as Error).message}` });
    }
    this.#o.instances.put({ ...meta, instance: record.instance });
    return this.#table.putModel(modelMessage(meta));
  }

  // ---- actions ----

  async createInstance(modelType: string, request: ActionRequest, caller: Caller = ANONYMOUS): Promise<Action> {
    await this.#requireModelType(modelType);
    return this.#start(ActionCall.CREATE_INSTANCE, "", modelType, request, caller);
  }

  async fit(modelId: string, request: ActionRequest, caller: Caller = ANONYMOUS): Promise<Action> {
    return this.#start(ActionCall.FIT, modelId, (await this.#modelOf(modelId)).modelType, request, caller);
  }

  async predict(modelId: string, request: ActionRequest, caller: Caller = ANONYMOUS): Promise<Action> {
    return this.#start(ActionCall.PREDICT, modelId, (await this.#modelOf(modelId)).modelType, request, caller);
  }

  /** The action as `view` asks, live or from the history, as `viewer` may see it (visibility.ts). */
  async getAction(actionId: string, view: ActionView, viewer: Caller = ANONYMOUS): Promise<Action> {
    return this.#shownTo(viewer)(await reads.getAction(this.#readers, actionId, view));
  }

  async listActions(query: reads.ListActionsQuery, viewer: Caller = ANONYMOUS): Promise<{ actions: Action[]; next: string }> {
    const { actions, next } = await reads.listActions(this.#readers, query);
    return { actions: actions.map(this.#shownTo(viewer)), next };
  }

  /** The action once it has ended; rejects with the signal's reason if that comes first. */
  async waitAction(actionId: string, view: ActionView, signal?: AbortSignal, viewer: Caller = ANONYMOUS): Promise<Action> {
    requireId("action_id", actionId);
    // A wait on an action that outlives this server (it runs elsewhere in a cluster) ends
    // when the server stops, saying where to wait instead.
    const ended = await this.#runner.wait(actionId, signal ? AbortSignal.any([signal, this.#stopped.signal]) : this.#stopped.signal);
    if (ended && !isEnded(ended.view)) {
      throw new PlinthError(
        "unavailable",
        `the server stopped while action ${actionId} waited for its attempt ${ended.view.attempt}: it runs after the server's restart, or on another server of the cluster; wait for it there`,
      );
    }
    return ended ? this.#shownTo(viewer)(reads.handOut(this.#readers, ended, view || ActionView.RESULT)) : this.getAction(actionId, view, viewer);
  }

  /**
   * Cancels the action and answers once it has ended. An ended action is returned as it
   * is. A caller cancels the actions it started; another caller's needs the admin role.
   */
  async cancelAction(actionId: string, caller: Caller = ANONYMOUS): Promise<Action> {
    requireId("action_id", actionId);
    if (!(await this.#runner.unfinished(actionId))) return this.getAction(actionId, ActionView.BASIC, caller);
    const createdBy = this.#table.action(actionId)?.view.createdBy ?? "";
    if (createdBy !== caller.name && !hasRole(caller, "admin")) {
      throw new PlinthError(
        "permission_denied",
        `action ${actionId} was started by ${createdBy || "another caller"}; cancelling another caller's action needs the admin role`,
      );
    }
    const ended = await this.#runner.cancel(actionId, new CancelReason("CancelAction", "cancelled by CancelAction", caller.name));
    return ended ?? this.getAction(actionId, ActionView.BASIC, caller);
  }

  // ---- state ----

  /** A page of the state: models, then actions, until pageBytes; `token` says where the last page ended. */
  getState(token: string, viewer: Caller = ANONYMOUS): { revision: bigint; models: Model[]; actions: Action[]; next: string } {
    const page = reads.getState(this.#readers, this.#o.publisher.revision, token);
    return { ...page, actions: page.actions.map(this.#shownTo(viewer)) };
  }

  /** The state stream: a snapshot (or what changed since `from`), then every change. */
  watchState(request: { from: bigint; filter: StateFilter }, signal: AbortSignal, viewer: Caller = ANONYMOUS): AsyncIterable<WatchStateResponse> {
    const messages = this.#watchers.watchState(request, signal);
    if (seesAll(viewer, this.#o.visibility)) return messages;
    const show = this.#shownTo(viewer);
    return mapped(messages, (message) => shownState(message, show));
  }

  /** The action now, then each update until it ends. */
  watchAction(actionId: string, signal: AbortSignal, viewer: Caller = ANONYMOUS): AsyncIterable<Action> {
    const actions = this.#watchers.watchAction(actionId, () => reads.getAction(this.#readers, actionId, ActionView.BASIC), signal);
    return seesAll(viewer, this.#o.visibility) ? actions : mapped(actions, this.#shownTo(viewer));
  }

  /** How `viewer` sees an action: in full, or redacted (visibility.ts). */
  #shownTo(viewer: Caller): (action: Action) => Action {
    return shownTo(viewer, this.#o.visibility);
  }

  /**
   * Refuses new actions (UNAVAILABLE: a client sends them to another server), takes no
   * more from a cluster's queue, and resolves once nothing queued or running here is
   * left, or after `graceMs`, or once `hurry` aborts — whichever comes first. Reads,
   * waits and watches go on meanwhile. close() then stops what is left.
   */
  async drain(graceMs: number, hurry?: AbortSignal): Promise<void> {
    this.#draining = { graceSeconds: graceMs / 1000 };
    if (graceMs <= 0 || hurry?.aborted) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onHurry: (() => void) | undefined;
    await Promise.race([
      this.#runner.drain(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
        onHurry = resolve;
        hurry?.addEventListener("abort", onHurry, { once: true });
      }),
    ]);
    clearTimeout(timer);
    if (onHurry) hurry?.removeEventListener("abort", onHurry);
  }

  /**
   * Refuses new actions, stops the running ones and waits for them to end; then ends the
   * streams, whose watchers have seen those last updates.
   */
  async close(): Promise<void> {
    this.#closing = true;
    this.#closed.abort(new PlinthError("shutting_down", "the server is shutting down; retry on another instance"));
    for (const timer of this.#timers) clearInterval(timer);
    await this.#runner.close();
    this.#stopped.abort(new PlinthError("unavailable", "the server stopped while waiting; the action goes on: wait for it on another server"));
    this.#watchers.close();
  }

  // ---- admission ----

  /** Checks a new action and admits it, once per request_id. */
  async #start(call: ActionCall, modelId: string, modelType: string, request: ActionRequest, caller: Caller): Promise<Action> {
    this.#refuseIfClosing();
    const { views, limits } = this.#o;
    const timeoutMs = request.timeout ? timeoutMillis(request.timeout) : undefined;
    priorityOf(request.priority); // checked before a request_id is claimed
    const kind = callKinds[call as keyof typeof callKinds];
    const retry = effectiveRetry(request.retry, this.#o.plugins.retry(modelType, kind));
    const parsed = parseArgs(request.args, request.kwargs, { ...limits, keepValueBytes: views.inlineBytes }, await this.#dataAccessNames(request));
    checkRequest(this.#o.plugins, modelType, kind, parsed);
    const admit = (id: string) => this.#admit(id, call, modelId, modelType, { ...request, retry }, caller, parsed, timeoutMs);
    const { requestId } = request;
    if (!requestId) return admit(newId("a"));
    checkRequestId(requestId);
    const digest = fingerprint(call, modelId, modelType, request);
    return this.#requestIds.once({ createdBy: caller.name, requestId, fingerprint: digest }, admit, this.#closed.signal);
  }

  /** Admits the checked action into the live state (QUEUED) and hands it to the runner. */
  async #admit(
    id: string,
    call: ActionCall,
    modelId: string,
    modelType: string,
    request: ActionRequest,
    caller: Caller,
    parsed: ReturnType<typeof parseArgs>,
    timeoutMs: number | undefined,
  ): Promise<Action> {
    const { views } = this.#o;
    this.#refuseIfClosing();
    this.#table.admit(parsed.bytes, caller.name);
    const now = timestampNow();
    const view = create(ActionSchema, {
      id,
      call,
      modelId,
      modelType,
      ...argsView(parsed, views.inlineBytes, views.maxJsonValueBytes),
      status: ActionStatus.QUEUED,
      dataAccess: parsed.dataAccess.map((n) =>
        Object.freeze(create(DataAccessProgressSchema, { argument: n.path, name: n.name, status: ActionStatus.QUEUED })),
      ),
      createTime: now,
      updateTime: now,
      createdBy: caller.name,
      priority: priorityOf(request.priority),
      attempt: 1,
      ...(request.retry ? { retry: request.retry } : {}),
      ...(request.timeout ? { timeout: request.timeout } : {}),
      ...(request.requestId ? { requestId: request.requestId } : {}),
    });
    const jsonForm = jsonFormOf(request);
    this.#table.addAction(view, parsed, jsonForm);
    const awaited = Boolean(request.wait) && !request.requestId && !request.retry;
    const start = await this.#runner.submit({ id: view.id, parsed, jsonForm, timeoutMs, awaited });
    // As stored, before it runs.
    const shown = reads.handOut(this.#readers, this.#table.action(view.id)!, ActionView.BASIC);
    start();
    return shown;
  }

  #refuseIfClosing(): void {
    if (this.#closing) throw new PlinthError("shutting_down", "the server is shutting down; retry on another instance");
    if (this.#draining) {
      throw new PlinthError(
        "unavailable",
        `the server is draining: it finishes what it runs (within engine.stop_grace_seconds, ${this.#draining.graceSeconds} s) and stops; send new calls to another server`,
      );
    }
  }

  /** A model type some plugin declares: this server's, or another server's of the engine. */
  async #requireModelType(modelType: string): Promise<void> {
    if (!modelType) throw invalid('model_type is required, e.g. "systest.Model" (ListPlugins lists them)');
    if (this.#o.plugins.modelType(modelType)) return;
    const names = new Set([...this.#o.plugins.modelTypeNames(), ...(await this.#runner.declared()).modelTypes]);
    if (names.has(modelType)) return;
    const known = [...names].join(", ") || "none";
    throw invalid(`model_type ${quote(modelType)} is not declared by any loaded plugin; known model types: ${known}`);
  }

  /** The data-access functions calls may use: this server's, and the other servers' of the engine too. */
  async #dataAccessNames(request: ActionRequest): Promise<(name: string) => boolean> {
    const local = (name: string) => this.#o.plugins.dataAccess(name) !== undefined;
    const named = (arg: Arg): boolean => arg.kind.case === "dataAccess";
    if (!(request.args.some(named) || Object.values(request.kwargs).some(named))) return local;
    const others = (await this.#runner.declared()).dataAccess;
    if (others.length === 0) return local;
    const names = new Set([...this.#o.plugins.dataAccessNames(), ...others]);
    return (name) => names.has(name);
  }

  /** The model as the live table holds it; one this server has not heard of yet is looked for first. */
  async #modelOf(modelId: string): Promise<Model> {
    requireId("model_id", modelId);
    if (!this.#table.model(modelId)) await this.#runner.catchUp();
    const model = this.#table.model(modelId);
    if (!model) throw notFound(`model ${cut(modelId)} not found`);
    return model;
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
}

/** The model a change's outcome names. */
function outcomeModel(outcome: string): string {
  return /model (\S+)/.exec(outcome)?.[1] ?? "";
}
