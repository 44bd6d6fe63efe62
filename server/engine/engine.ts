/**
 * The engine: models, actions and their lifecycle, behind one API that the transports
 * (server/rpc) call. Calls on one model run one at a time (ModelLocks); every plugin
 * call goes through the ProcessManager; every change is recorded in the LiveState,
 * which publishes it with a new revision, and (but progress) stored.
 *
 * An action's lifecycle lives here: wait for its model, let an ActionRun resolve its
 * data access and call the plugin, store the instance it produced, end it. The run
 * reports its steps through a RunReporter and never reaches further up.
 */
import { getEventListeners, setMaxListeners } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary } from "@bufbuild/protobuf";
import { type Duration, durationFromMs, type Timestamp, timestampDate, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import {
  type Action,
  ActionCall,
  type ActionError,
  ActionErrorSchema,
  ActionResultSchema,
  ActionSchema,
  ActionStatus,
  ActionView,
  CancelOutcomeSchema,
  DataAccessProgressSchema,
} from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { type JsonForm, PredictRequestSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import type { WatchStateResponse } from "../../gen/plinth/v1/state_service_pb.ts";
import { CallKind } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { encodedSize } from "../encoded.ts";
import { cut, invalid, notFound, PlinthError, quote } from "../errors.ts";
import type { ClaimedAction, Cluster, ClusterEvents, ServerInfo } from "../cluster/types.ts";
import { ChildFailure } from "../process/child.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import { goneServerEnd, interruptedAction } from "../store/interrupted.ts";
import { modelMessage } from "../store/model-message.ts";
import { isCommitUnknown, type ModelMeta, type ModelRecord, type Store, type StoredAction, type StoredPayloads } from "../store/store.ts";
import { type ActionErrorCode, pluginErrorCode } from "./action-errors.ts";
import { ANONYMOUS, type Caller, hasRole } from "./caller.ts";
import { ActionFailure } from "./action-failure.ts";
import { ActionRun, type RunReporter } from "./action-run.ts";
import { type ArgLimits, type CallArgs, type ParsedArgs, parseArgs } from "./args.ts";
import { checkRequest } from "./check-args.ts";
import { CancelReason } from "./cancel-reason.ts";
import { newId } from "./ids.ts";
import type { Coalesced } from "./coalesce.ts";
import { Feed } from "./feed.ts";
import { type ActionPatch, isEnded, type LiveAction, LiveState, type LiveStateOptions, type StateEvent } from "./live-state.ts";
import { ModelCache } from "./model-cache.ts";
import { ModelLocks } from "./model-locks.ts";
import { type Payload, payloadArg } from "./payloads.ts";
import type { PluginRegistry } from "./plugins.ts";
import { checkRevision, elapsedMs, jsonFormOf, listToken, pageSize, parseStateToken, requestBytes, requireId, timeoutMillis } from "./requests.ts";
import { argsView, fullerView, type ViewLimits } from "./views.ts";
import { type StateFilter, watchAction, watchState } from "./watch.ts";

/** How often the action history's retention is applied. */
const PRUNE_PERIOD_MS = 10 * 60 * 1000;
/** How often a cluster's server looks for claims it holds but does not run. */
const LOST_CLAIM_CHECK_MS = 5000;
/** How often ended actions are checked against the live state's retention by age. */
const RETIRE_PERIOD_MS = 60 * 1000;

export interface EngineOptions extends LiveStateOptions {
  store: Store;
  /** Several servers share the store (postgres): each action's whole request is kept until it ends, and the server that runs it claims it from there. */
  cluster?: Cluster | undefined;
  processes: ProcessManager;
  plugins: PluginRegistry;
  logger: Logger;
  /** Minimum time between two progress revisions of one action. */
  progressIntervalMs: number;
  limits: Omit<ArgLimits, "keepValueBytes">;
  views: ViewLimits;
  /** The history keeps a payload in full up to this size. */
  maxStoredPayloadBytes: number;
  /** A watcher this far behind gets a fresh snapshot instead. */
  watcherQueueBytes: number;
  /** Responses that list things (GetState, ListActions, snapshots) stop adding at this size. */
  pageBytes: number;
  /** Actions this server runs at once (engine.max_children): in a cluster, how much work it claims. */
  maxRunning: number;
  /** Model instances kept in memory, in bytes at most. */
  modelCacheBytes: number;
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
}

/** A running action: how to stop it, and when it has ended. */
interface Running {
  readonly controller: AbortController;
  /** Settles with the action as it ended (before retention may drop it). */
  readonly done: Promise<LiveAction>;
  cancelledAt?: { phase: ActionStatus; at: number };
}

const callKinds = {
  [ActionCall.CREATE_INSTANCE]: CallKind.INSTANTIATE,
  [ActionCall.FIT]: CallKind.FIT,
  [ActionCall.PREDICT]: CallKind.PREDICT,
} as const;

export class Engine {
  readonly #o: EngineOptions;
  readonly #live: LiveState;
  readonly #locks = new ModelLocks();
  readonly #running = new Map<string, Running>();
  #closing = false;
  /** Ends the streams once the server stops. */
  readonly #stopping = new AbortController();
  /** The open WatchState streams' queues. */
  readonly #watchers = new Set<Coalesced<unknown>>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Several servers on one database (postgres): the state comes from its feed, work is claimed. */
  readonly #cluster: Cluster | undefined;
  #feed: Feed | undefined;
  #claiming = false;
  #claimAgain = false;
  readonly #instances: ModelCache;
  /** Ended here, their end not yet taken by the database (#recordEnd). */
  readonly #recording = new Set<string>();
  /** Held in the queue by this server but not run here at the last look: lost claims, if still so at the next. */
  #unaccounted = new Set<string>();
  /** The timeouts of queued calls this server took, until a server claims them or they end. */
  readonly #queueTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** New calls this server is claiming as they are stored: counted against its free children. */
  #reserved = 0;
  /** Waiters for actions that were queued in the cluster: told when this server starts one. */
  readonly #launchWaiters = new Map<string, Set<() => void>>();
  readonly #listeners: { [K in keyof ClusterEvents]: (...args: ClusterEvents[K]) => void } = {
    changes: (batch) => void this.#feed?.notice(batch),
    work: () => this.#claimSoon(true),
    cancel: (id, by) => {
      const running = this.#running.get(id);
      if (running) this.#cancel(id, running, new CancelReason("CancelAction", "cancelled by CancelAction", by));
    },
  };

  private constructor(options: EngineOptions) {
    this.#o = options;
    this.#cluster = options.cluster;
    this.#instances = new ModelCache(options.modelCacheBytes);
    this.#live = new LiveState({ ...options, fed: this.#cluster !== undefined });
    setMaxListeners(0, this.#stopping.signal); // One listener per open stream.
  }

  /**
   * Loads the models' metadata (instance bytes stay in the store until asked for) and
   * marks every action the previous server left unfinished as failed: interrupted (or
   * succeeded, when an older Plinth stored its revision and died before its end).
   */
  static async open(options: EngineOptions): Promise<Engine> {
    const engine = new Engine(options);
    const { store, logger } = options;
    const { cluster } = options;
    if (cluster) await engine.#join(cluster);
    else {
      engine.#live.loadModels((await store.allModels()).map((meta) => modelMessage(meta)));
      const why = "interrupted by server restart";
      for (const action of await store.unfinishedActions()) {
        const ended = goneServerEnd(action, why, await store.revisionMadeBy(action));
        await store.putAction(ended);
        const as = ended.status === ActionStatus.SUCCEEDED ? "succeeded: its new revision had been stored" : `failed: ${why}`;
        logger.warn({ actionId: action.id }, `an action the previous server left unfinished is marked ${as}`);
      }
    }
    await engine.#pruneHistory();
    engine.#timers.push(
      setInterval(() => void engine.#pruneHistory(), PRUNE_PERIOD_MS),
      setInterval(() => engine.#live.retire(), RETIRE_PERIOD_MS),
    );
    for (const timer of engine.#timers) timer.unref();
    return engine;
  }

  /** Starts from the cluster's state, follows its feed, and takes its share of the queued work. */
  async #join(cluster: Cluster): Promise<void> {
    const snapshot = await cluster.snapshot();
    this.#live.loadSnapshot(
      snapshot.revision,
      snapshot.models.map((meta) => modelMessage(meta)),
      snapshot.actions,
    );
    this.#feed = new Feed(cluster, this.#live, (id) => this.#running.has(id), this.#o.logger);
    // A queued call's timeout is the claiming server's to count once one claims it.
    this.#live.subscribe((event) => {
      if (event.kind !== "action_upserted" || this.#queueTimers.size === 0) return;
      const { id, server } = event.action;
      if (!server && !isEnded(event.action)) return;
      clearTimeout(this.#queueTimers.get(id));
      this.#queueTimers.delete(id);
    });
    for (const [event, listener] of Object.entries(this.#listeners)) cluster.events.on(event as keyof ClusterEvents, listener as () => void);
    await this.#feed.pull();
    this.#claimSoon(true);
    this.#timers.push(setInterval(() => void this.#releaseLost(cluster), LOST_CLAIM_CHECK_MS));
  }

  /**
   * A claim whose answer a broken connection lost leaves the call held by this server and
   * run by none: one held but not run here at two looks in a row is given back (queued
   * again if it had not started, else ended interrupted).
   */
  async #releaseLost(cluster: Cluster): Promise<void> {
    try {
      const held = (await cluster.owned()).filter((id) => !this.#running.has(id) && !this.#recording.has(id));
      const lost = held.filter((id) => this.#unaccounted.has(id));
      this.#unaccounted = new Set(held.filter((id) => !lost.includes(id)));
      if (lost.length === 0) return;
      this.#o.logger.warn(
        { actions: lost },
        "actions this server had claimed but was not running (a claim lost with a broken connection) go back to the queue",
      );
      await cluster.release(lost, "the server that claimed it lost track of it (its claim's answer was lost with a broken database connection)");
    } catch (error) {
      this.#o.logger.debug({ err: error }, "looking for lost claims failed; the next look tries again");
    }
  }

  /** The servers of the cluster and what each runs; empty without one. */
  async servers(): Promise<ServerInfo[]> {
    return (await this.#cluster?.servers()) ?? [];
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

  /** What the live state and its watchers hold: for tests and metrics. */
  get stats(): EngineStats {
    const { inflight, ended } = this.#live.bytes;
    let pending = 0;
    let pendingBytes = 0;
    for (const watcher of this.#watchers) {
      pending += watcher.pending.count;
      pendingBytes += watcher.pending.bytes;
    }
    return {
      revision: this.#live.revision,
      waiting: this.#live.waiting,
      subscribers: this.#live.subscribers,
      inflightBytes: inflight,
      retainedBytes: ended,
      watchers: this.#watchers.size,
      pending,
      pendingBytes,
      stopListeners: getEventListeners(this.#stopping.signal, "abort").length,
    };
  }

  /** Every change from now on, synchronously: for tests and metrics. Returns the unsubscribe. */
  subscribe(listener: (event: StateEvent) => void): () => void {
    return this.#live.subscribe(listener);
  }

  // ---- models ----

  async getModel(modelId: string, includeInstance: boolean, revision = 0n): Promise<Model> {
    requireId("model_id", modelId);
    checkRevision("revision", revision);
    const record = await this.#o.store.getModel(modelId, revision || undefined);
    if (!record) {
      const latest = this.#live.model(modelId);
      if (latest && revision) {
        throw notFound(`model ${modelId} has no revision ${revision}: it keeps revisions ${latest.oldestRevision} to ${latest.revision}`);
      }
      throw notFound(`model ${cut(modelId)} not found`);
    }
    return modelMessage(record, includeInstance ? record.instance : undefined);
  }

  async listModels(query: { modelType: string; pageSize: number; pageToken: string }): Promise<{ models: Model[]; next: string }> {
    const limit = pageSize(query.pageSize);
    const afterId = listToken(query.pageToken, "m", "ListModels");
    const records = await this.#o.store.listModels({
      limit: limit + 1,
      ...(query.modelType ? { modelType: query.modelType } : {}),
      ...(afterId ? { afterId } : {}),
    });
    const page = records.slice(0, limit);
    return { models: page.map((r) => modelMessage(r)), next: records.length > limit ? page.at(-1)!.id : "" };
  }

  async addInstance(modelType: string, instance: Uint8Array): Promise<Model> {
    this.#refuseIfClosing();
    await this.#requireModelType(modelType);
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
    await this.#modelOf(modelId);
    if (this.#cluster) return this.#updateInCluster(this.#cluster, modelId, instance, signal);
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

  /**
   * UpdateInstance in a cluster: after the calls on the model queued before it, wherever
   * they run, and never while one runs — waiting for them through the feed.
   */
  async #updateInCluster(cluster: Cluster, modelId: string, instance: Uint8Array, signal?: AbortSignal): Promise<Model> {
    const queuedUpTo = await cluster.queueEnd(modelId);
    for (;;) {
      signal?.throwIfAborted();
      const record = await this.#o.store.getModel(modelId);
      if (!record) throw notFound(`model ${modelId} not found`);
      const next = { ...record, revision: record.revision + 1n, updateTime: new Date(), instance, instanceSize: instance.byteLength, actionId: "" };
      let meta: ModelMeta | undefined;
      try {
        meta = await cluster.putModelQuiet(next, queuedUpTo);
      } catch (error) {
        // Another change of the model came first: read it again.
        if (PlinthError.is(error) && error.kind === "failed_precondition") continue;
        throw error;
      }
      if (meta) {
        this.#instances.put({ ...meta, instance });
        return this.#live.putModel(modelMessage(meta));
      }
      await this.#modelCallEnded(modelId, signal);
    }
  }

  /** Resolves when a call on the model ends (as the feed tells it), or after a second; rejects with the signal's reason. */
  #modelCallEnded(modelId: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
      };
      const done = () => {
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      const timer = setTimeout(done, 1000);
      const unsubscribe = this.#live.subscribe((event) => {
        if (event.kind === "action_upserted" && event.action.modelId === modelId && isEnded(event.action)) done();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async deleteModel(modelId: string): Promise<void> {
    await this.#modelOf(modelId);
    const busy = this.#locks.users(modelId);
    if (busy > 0) {
      throw new PlinthError(
        "failed_precondition",
        `model ${modelId} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
      );
    }
    await this.#o.store.deleteModel(modelId);
    this.#instances.delete(modelId);
    this.#live.deleteModel(modelId);
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

  /** The action as `view` asks: live, or from the history. */
  async getAction(actionId: string, view: ActionView): Promise<Action> {
    requireId("action_id", actionId);
    view ||= ActionView.RESULT;
    const live = this.#live.action(actionId);
    // Another server's action: its payloads are in the store.
    if (live && !(live.remote && view !== ActionView.BASIC)) return this.#handOut(live, view);
    const stored = await this.#o.store.getAction(actionId, view !== ActionView.BASIC);
    if (!stored) throw notFound(`action ${cut(actionId)} not found`);
    return withStoredPayloads(stored.action, stored.payloads, view);
  }

  async listActions(query: {
    modelId: string;
    statuses: ActionStatus[];
    pageSize: number;
    pageToken: string;
    createdAfter?: Timestamp | undefined;
    createdBefore?: Timestamp | undefined;
    createdBy?: string;
    view: ActionView;
  }): Promise<{ actions: Action[]; next: string }> {
    const limit = pageSize(query.pageSize);
    const beforeId = listToken(query.pageToken, "a", "ListActions");
    if (query.statuses.length > 16) throw invalid(`statuses: at most 16, got ${query.statuses.length}`);
    const view = query.view || ActionView.BASIC;
    const stored = await this.#o.store.listActions(
      {
        limit: limit + 1,
        ...(query.modelId ? { modelId: query.modelId } : {}),
        ...(query.statuses.length ? { statuses: query.statuses } : {}),
        ...(beforeId ? { beforeId } : {}),
        ...(query.createdAfter ? { createdAfter: timestampDate(query.createdAfter) } : {}),
        ...(query.createdBefore ? { createdBefore: timestampDate(query.createdBefore) } : {}),
        ...(query.createdBy ? { createdBy: query.createdBy } : {}),
      },
      view !== ActionView.BASIC,
    );
    // A page ends at `limit` actions or pageBytes, whichever comes first (one at least).
    const actions: Action[] = [];
    let bytes = 0;
    for (const { action, payloads } of stored.slice(0, limit)) {
      const shown = withStoredPayloads(action, payloads, view);
      bytes += encodedSize(ActionSchema, shown);
      if (actions.length > 0 && bytes > this.#o.pageBytes) break;
      actions.push(shown);
    }
    const more = actions.length < stored.length;
    return { actions, next: more ? actions.at(-1)!.id : "" };
  }

  /** The action once it has ended; rejects with the signal's reason if that comes first. */
  async waitAction(actionId: string, view: ActionView, signal?: AbortSignal): Promise<Action> {
    requireId("action_id", actionId);
    view ||= ActionView.RESULT;
    const running = this.#running.get(actionId);
    if (!running) {
      // In a cluster: queued, or running on another server; it ends here or in the feed.
      if (this.#cluster && (await this.#unfinishedInCluster(actionId))) await this.#ended(actionId, signal);
      return this.getAction(actionId, view);
    }
    signal?.throwIfAborted();
    const ended = await new Promise<LiveAction>((resolve, reject) => {
      const onAbort = () => reject(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      void running.done.then((live) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(live);
      });
    });
    return this.#handOut(ended, view);
  }

  /**
   * Cancels the action and answers once it has ended. An ended action is returned as it
   * is. A caller cancels the actions it started; another caller's needs the admin role.
   * In a cluster: a queued action is ended here; one another server runs, by that server.
   */
  async cancelAction(actionId: string, caller: Caller = ANONYMOUS): Promise<Action> {
    requireId("action_id", actionId);
    const running = this.#running.get(actionId);
    const cluster = this.#cluster;
    if (!running && !(cluster && (await this.#unfinishedInCluster(actionId)))) return this.getAction(actionId, ActionView.BASIC);
    const createdBy = this.#live.action(actionId)?.view.createdBy ?? "";
    if (createdBy !== caller.name && !hasRole(caller, "admin")) {
      throw new PlinthError(
        "permission_denied",
        `action ${actionId} was started by ${createdBy || "another caller"}; cancelling another caller's action needs the admin role`,
      );
    }
    const reason = new CancelReason("CancelAction", "cancelled by CancelAction", caller.name);
    if (running) {
      this.#cancel(actionId, running, reason);
      return (await running.done).view;
    }
    // Queued: ended here. Claimed: the server running it stops it — asked again each
    // second, in case the request came before that server knew it had claimed it, or
    // that server went and the call is queued again.
    while (this.#unfinished(actionId) && !this.#running.has(actionId)) {
      const queued = await cluster!.takeQueued(actionId);
      if (queued) return this.#cancelQueued(queued, reason);
      await cluster!.requestCancel(actionId, caller.name);
      await this.#ended(actionId, AbortSignal.timeout(1000)).catch(() => {});
    }
    const local = this.#running.get(actionId);
    if (local) {
      this.#cancel(actionId, local, reason);
      return (await local.done).view;
    }
    return this.getAction(actionId, ActionView.BASIC);
  }

  /** Ends a queued action this server took from the cluster's queue: cancelled (or timed out) before it started. */
  async #cancelQueued(view: Action, reason: CancelReason): Promise<Action> {
    this.#live.adopt(view, { args: [], kwargs: {} }, "json");
    const ended = this.#live.finish(view.id, {
      status: reason.by === "timeout" ? ActionStatus.FAILED : ActionStatus.CANCELLED,
      error: create(ActionErrorSchema, { code: reason.kind, message: reason.message }),
      cancel: create(CancelOutcomeSchema, {
        by: reason.by,
        phase: ActionStatus.QUEUED,
        stopDuration: durationFromMs(0),
        cancelledBy: reason.caller,
      }),
      dataAccess: cancelledDataAccess(view.dataAccess),
      endTime: timestampNow(),
    });
    await this.#persist(ended.view);
    return ended.view;
  }

  /** Whether the action has not ended, as the cluster knows: one this server has not heard of yet is looked for first. */
  async #unfinishedInCluster(actionId: string): Promise<boolean> {
    if (!this.#live.action(actionId)) await this.#feed?.pull();
    return this.#unfinished(actionId);
  }

  /** Whether the live state holds the action as not ended yet. */
  #unfinished(actionId: string): boolean {
    const live = this.#live.action(actionId);
    return live !== undefined && !isEnded(live.view);
  }

  /** Resolves once the action has ended here or in the feed; rejects with the signal's reason first. */
  #ended(actionId: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
        const waiting = this.#launchWaiters.get(actionId);
        waiting?.delete(onLaunch);
        if (waiting?.size === 0) this.#launchWaiters.delete(actionId);
      };
      const done = () => {
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      // Claimed by this server meanwhile: it ends here.
      const onLaunch = () => void this.#running.get(actionId)?.done.then(done, done);
      const unsubscribe = this.#live.subscribe((event) => {
        if (event.kind !== "action_upserted" || event.action.id !== actionId || !isEnded(event.action)) return;
        // Run here, it has ended once its run has: the feed may bring its end (committed with its revision) first.
        if (this.#running.has(actionId)) onLaunch();
        else done();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      const waiting = this.#launchWaiters.get(actionId) ?? new Set();
      this.#launchWaiters.set(actionId, waiting.add(onLaunch));
      if (this.#running.has(actionId)) onLaunch();
      else if (!this.#unfinished(actionId)) done();
    });
  }

  // ---- state ----

  /** A page of the state: models, then actions, until pageBytes; `token` says where the last page ended. */
  getState(token: string): { revision: bigint; models: Model[]; actions: Action[]; next: string } {
    const [section, after] = parseStateToken(token);
    const page = { revision: this.#live.revision, models: [] as Model[], actions: [] as Action[], next: "" };
    let bytes = 0;
    const fits = (size: number) => {
      bytes += size;
      return bytes <= this.#o.pageBytes || page.models.length + page.actions.length === 0;
    };
    if (section === "m") {
      for (const model of this.#live.models()) {
        if (after && model.id <= after) continue;
        if (!fits(encodedSize(ModelSchema, model))) return { ...page, next: `m:${page.models.at(-1)!.id}` };
        page.models.push(model);
      }
    }
    for (const live of this.#live.actions()) {
      if (section === "a" && after && live.view.id <= after) continue;
      if (!fits(encodedSize(ActionSchema, live.view))) {
        const last = page.actions.at(-1);
        return { ...page, next: last ? `a:${last.id}` : `m:${page.models.at(-1)!.id}` };
      }
      page.actions.push(live.view);
    }
    return page;
  }

  /** The state stream: a snapshot (or what changed since `from`), then every change. */
  watchState(request: { from: bigint; filter: StateFilter }, signal: AbortSignal): AsyncIterable<WatchStateResponse> {
    checkRevision("from_revision", request.from);
    const limits = { pageBytes: this.#o.pageBytes, queueBytes: this.#o.watcherQueueBytes };
    return watchState(this.#live, this.#o.store, request, limits, [signal, this.#stopping.signal], this.#watchers);
  }

  /** The action now, then each update until it ends. */
  watchAction(actionId: string, signal: AbortSignal): AsyncIterable<Action> {
    requireId("action_id", actionId);
    return watchAction(this.#live, actionId, () => this.getAction(actionId, ActionView.BASIC), [signal, this.#stopping.signal]);
  }

  /**
   * Refuses new actions, cancels running ones and waits for them to end; then ends the
   * streams, whose watchers have seen those last updates.
   */
  async close(): Promise<void> {
    this.#closing = true;
    for (const timer of this.#timers) clearInterval(timer);
    for (const timer of this.#queueTimers.values()) clearTimeout(timer);
    for (const [id, running] of this.#running) this.#cancel(id, running, new CancelReason("shutdown", "the server is shutting down"));
    await Promise.all([...this.#running.values()].map((r) => r.done));
    // In a cluster, the actions still queued stay queued: the other servers run them.
    for (const [event, listener] of Object.entries(this.#listeners)) this.#cluster?.events.off(event as keyof ClusterEvents, listener as () => void);
    await this.#feed?.pull();
    this.#stopping.abort();
  }

  // ---- the lifecycle of an action ----

  async #start(call: ActionCall, modelId: string, modelType: string, request: ActionRequest, caller: Caller): Promise<Action> {
    this.#refuseIfClosing();
    const { views, limits } = this.#o;
    const timeoutMs = request.timeout ? timeoutMillis(request.timeout) : undefined;
    const parsed = parseArgs(request.args, request.kwargs, { ...limits, keepValueBytes: views.inlineBytes }, await this.#dataAccessNames(request));
    checkRequest(this.#o.plugins, modelType, callKinds[call as keyof typeof callKinds], parsed);
    this.#live.admit(parsed.bytes, caller.name);
    const now = timestampNow();
    const view = create(ActionSchema, {
      id: newId("a"),
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
      ...(request.timeout ? { timeout: request.timeout } : {}),
    });
    const jsonForm = jsonFormOf(request);
    const added = this.#live.addAction(view, parsed, jsonForm);
    const cluster = this.#cluster;
    // In a cluster the action waits in the database's queue for a server to claim it:
    // this one at once when it has a child to spare and the model is free.
    const claim = cluster !== undefined && this.#canRunHere(parsed, modelType);
    let running: Running | undefined = cluster ? undefined : { controller: new AbortController(), done: undefined as never };
    /** Claimed here: the model's revision then. */
    let claimed: bigint | undefined;
    if (running) this.#running.set(view.id, running);
    if (claim) this.#reserved++;
    try {
      // The action exists once the store has it: a store that fails refuses the call.
      const payloads = this.#storedPayloads(parsed, undefined);
      if (!cluster) await this.#persist(added, payloads);
      else {
        claimed = await cluster.enqueue(added, { ...payloads, request: requestBytes(parsed, jsonForm, views.maxJsonValueBytes) }, claim);
      }
      if (cluster && claimed !== undefined) {
        running = { controller: new AbortController(), done: undefined as never };
        this.#running.set(view.id, running);
        this.#live.adopt(create(ActionSchema, { ...added, server: cluster.server }), parsed, jsonForm);
      }
    } catch (error) {
      this.#running.delete(view.id);
      this.#live.finish(view.id, { status: ActionStatus.FAILED, error: failure(error).error, endTime: timestampNow() });
      const cause = error instanceof ActionFailure ? error.cause : error;
      throw PlinthError.is(cause) ? cause : new PlinthError("unavailable", (error as Error).message, { cause });
    } finally {
      if (claim) this.#reserved--;
    }
    const shown = this.#handOut(this.#live.action(view.id)!, ActionView.BASIC);
    if (running) this.#launch(view.id, running, parsed, timeoutMs, claimed);
    else {
      if (timeoutMs !== undefined) this.#expireQueued(view.id, timeoutMs);
      this.#claimSoon(true);
    }
    return shown;
  }

  /**
   * A queued call's timeout, counted from its creation while no server has claimed it
   * (the one that claims it counts what is left): one still in the queue then ends
   * FAILED, deadline_exceeded, without waiting for a free child.
   */
  #expireQueued(id: string, timeoutMs: number): void {
    const cluster = this.#cluster!;
    const timer = setTimeout(async () => {
      this.#queueTimers.delete(id);
      if (this.#closing || this.#running.has(id) || !this.#unfinished(id)) return;
      try {
        const queued = await cluster.takeQueued(id);
        if (queued)
          await this.#cancelQueued(queued, new CancelReason("timeout", `the action did not end within its timeout of ${timeoutMs / 1000} s`));
      } catch (error) {
        this.#o.logger.warn({ err: error, actionId: id }, "ending a queued action past its timeout failed; the server that claims it ends it");
      }
    }, timeoutMs);
    timer.unref();
    this.#queueTimers.set(id, timer);
  }

  #queuedElsewhere(): boolean {
    for (const id of this.#live.queued()) if (!this.#running.has(id)) return true;
    return false;
  }

  /** Whether this server can run the call now: a child to spare, its model type and data access here. */
  #canRunHere(parsed: ParsedArgs, modelType: string): boolean {
    const { plugins } = this.#o;
    return (
      this.#o.maxRunning - this.#running.size - this.#reserved > 0 &&
      plugins.modelType(modelType) !== undefined &&
      parsed.dataAccess.every((node) => plugins.dataAccess(node.name) !== undefined)
    );
  }

  /** Runs an action the live state holds, under its timeout (what is left of it). */
  #launch(id: string, running: Running, parsed: ParsedArgs, timeoutMs: number | undefined, modelRevision?: bigint): void {
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => this.#cancel(id, running, new CancelReason("timeout", `the action did not end within its timeout of ${timeoutMs / 1000} s`)),
            Math.max(0, timeoutMs - elapsedMs(this.#live.action(id)!.view)),
          );
    timer?.unref();
    (running as { done: Promise<LiveAction> }).done = this.#run(id, running, parsed, modelRevision).finally(() => {
      clearTimeout(timer);
      this.#running.delete(id);
      // A child is free, and the model: more work may be claimable.
      if (this.#cluster) this.#claimSoon();
    });
  }

  /**
   * Claims queued work while this server has children to spare; one claim at a time.
   * Unless `anyway` (the cluster said work may be there), only when the live state shows
   * queued actions this server does not run.
   */
  #claimSoon(anyway = false): void {
    if (!anyway && !this.#queuedElsewhere()) return;
    if (this.#claiming) {
      this.#claimAgain = true;
      return;
    }
    this.#claiming = true;
    void this.#claim().finally(() => (this.#claiming = false));
  }

  async #claim(): Promise<void> {
    const cluster = this.#cluster!;
    do {
      this.#claimAgain = false;
      const free = this.#o.maxRunning - this.#running.size - this.#reserved;
      if (this.#closing || free <= 0) return;
      let claimed: ClaimedAction[];
      try {
        claimed = await cluster.claim(free, this.#o.plugins.modelTypeNames(), this.#o.plugins.dataAccessNames());
      } catch (error) {
        // The cluster's next tick (every second) tries again.
        this.#o.logger.warn({ err: error }, "claiming queued actions failed");
        return;
      }
      for (const work of claimed) await this.#runClaimed(work);
      if (claimed.length === free) this.#claimAgain = true;
    } while (this.#claimAgain);
  }

  /** Runs an action this server claimed, from its kept request; one whose request no longer parses here fails. */
  async #runClaimed({ action, request: bytes, modelRevision }: ClaimedAction): Promise<void> {
    const { views, limits, plugins } = this.#o;
    const running: Running = { controller: new AbortController(), done: undefined as never };
    this.#running.set(action.id, running);
    let parsed: ParsedArgs;
    let request: ActionRequest;
    try {
      request = fromBinary(PredictRequestSchema, bytes);
      parsed = parseArgs(
        request.args,
        request.kwargs,
        { ...limits, keepValueBytes: views.inlineBytes },
        (name) => plugins.dataAccess(name) !== undefined,
      );
    } catch (error) {
      this.#running.delete(action.id);
      const failed = interruptedAction(action, `its request no longer fits this server's plugins: ${(error as Error).message}`);
      await this.#o.store
        .putAction(failed)
        .catch((e: unknown) => this.#o.logger.error({ err: e, actionId: action.id }, "storing a failed action failed"));
      return;
    }
    this.#live.adopt(create(ActionSchema, { ...action, server: this.#cluster!.server }), parsed, jsonFormOf(request));
    this.#launch(action.id, running, parsed, action.timeout ? timeoutMillis(action.timeout) : undefined, modelRevision);
    for (const waiter of this.#launchWaiters.get(action.id) ?? []) waiter();
  }

  #cancel(id: string, running: Running, reason: CancelReason): void {
    const live = this.#live.action(id);
    if (running.controller.signal.aborted || !live || isEnded(live.view)) return;
    running.cancelledAt = { phase: live.view.status, at: performance.now() };
    running.controller.abort(reason);
  }

  /**
   * `modelRevision`: the model's revision as the claim found it (a cluster); else the live
   * state's. The instance comes from the cache when it holds that revision.
   */
  async #run(id: string, running: Running, args: CallArgs & { dataAccess: readonly unknown[] }, modelRevision?: bigint): Promise<LiveAction> {
    const live = this.#live;
    const { signal } = running.controller;
    const { modelId, modelType, call } = live.action(id)!.view;
    // Set once the action leaves the model's queue; goes out with its next status.
    const pending: ActionPatch = {};
    const run = new ActionRun(this.#o, this.#reporter(id, pending), { actionId: id, modelId });
    let patch: ActionPatch;
    let result: Payload | undefined;
    try {
      using _lock = modelId ? await this.#locks.acquire(modelId, signal) : undefined;
      pending.startTime = timestampNow();
      const model = modelId ? await this.#model(modelId, modelRevision) : undefined;
      if (modelId && !model) throw new ActionFailure({ code: "not_found", message: `model ${modelId} was deleted` });
      const jsonForm = live.action(id)!.jsonForm;
      const kind = callKinds[call as keyof typeof callKinds];
      const out = await run.execute({ kind, modelType, instance: model?.instance, jsonForm }, args, args.dataAccess.length, signal);
      const prediction = call === ActionCall.PREDICT ? out.value : undefined;
      result = prediction;
      const { inlineBytes, maxJsonValueBytes } = this.#o.views;
      const succeeded = (stored?: Model): ActionPatch => ({
        ...pending,
        status: ActionStatus.SUCCEEDED,
        logTail: out.logTail,
        ...(stored && !modelId ? { modelId: stored.id } : {}),
        result: create(ActionResultSchema, {
          ...(stored ? { model: stored } : {}),
          ...(prediction ? { prediction: payloadArg(prediction, inlineBytes, maxJsonValueBytes) } : {}),
        }),
      });
      if (out.instance !== undefined) {
        await this.#transition(id, { status: ActionStatus.STORING });
        return await this.#endWithRevision(id, this.#nextRevision(id, modelType, model, out.instance), succeeded, pending, prediction);
      }
      patch = succeeded();
    } catch (error) {
      result = undefined;
      patch = this.#failurePatch(id, error, running, run.stoppedChild);
    }
    const ended = live.finish(id, { ...pending, ...patch, endTime: timestampNow() }, result);
    try {
      await this.#persist(ended.view, this.#storedPayloads(undefined, result));
    } catch (error) {
      // The action ended but the history could not record it: say so on the action.
      this.#o.logger.error({ err: error, actionId: id }, "storing an ended action failed");
      const failed = create(ActionSchema, { ...ended.view, status: ActionStatus.FAILED, error: failure(error).error });
      const view = live.action(id) ? live.update(id, { status: failed.status, error: failed.error! }) : Object.freeze(failed);
      // In a cluster the others see the action as the database has it: it must end there too.
      if (this.#cluster) void this.#recordEnd(view);
      return { ...ended, view };
    }
    return ended;
  }

  /**
   * Ends an action whose call made a new instance: the model's next revision and the
   * action's success are one commit (invariant 1), and the action ends once it is made.
   * A commit that failed throws store_failed: the model is as it was. One whose answer
   * was lost ends the action as the store holds it once it answers again: SUCCEEDED with
   * the revision if the commit was made.
   */
  async #endWithRevision(
    id: string,
    record: ModelRecord,
    succeeded: (stored: Model) => ActionPatch,
    pending: ActionPatch,
    prediction: Payload | undefined,
  ): Promise<LiveAction> {
    const live = this.#live;
    let meta: ModelMeta | undefined;
    let patch: ActionPatch = {};
    const ended = (stored: ModelMeta): StoredAction => {
      meta = stored;
      const endTime = timestampNow();
      patch = { ...succeeded(modelMessage(stored)), endTime, updateTime: endTime };
      // As live.finish shows it once committed: nothing else changes the action meanwhile.
      const view = Object.freeze({ ...live.action(id)!.view, ...patch, queuePosition: 0 }) as Action;
      return { action: view, payloads: this.#storedPayloads(undefined, prediction) };
    };
    try {
      await this.#o.store.putModel(record, ended);
    } catch (error) {
      const failed = new ActionFailure(
        { code: "store_failed", message: `the store could not record the model's new revision: ${(error as Error).message}` },
        [],
        error,
      );
      if (!isCommitUnknown(error)) throw failed;
      const held = await this.#settleEnd(id, failed, pending);
      // The server stops first: the action stays as the store has it, for the next start, or the other servers, to end.
      if (!held) return live.action(id)!;
      if (held.status !== ActionStatus.SUCCEEDED) {
        const { status, error: stored, dataAccess, endTime, updateTime } = held;
        return live.finish(id, {
          ...pending,
          status,
          dataAccess,
          ...(stored ? { error: stored } : {}),
          ...(endTime ? { endTime } : {}),
          ...(updateTime ? { updateTime } : {}),
        });
      }
      this.#o.logger.info({ actionId: id, revision: record.revision }, "the new revision's commit had been made: the action succeeded");
    }
    this.#instances.put({ ...meta!, instance: record.instance });
    // A cluster's feed may have brought it, or a later one, meanwhile.
    if ((live.model(meta!.id)?.revision ?? 0n) < meta!.revision) live.putModel(modelMessage(meta!));
    return live.finish(id, patch, prediction);
  }

  /**
   * The end of an action whose revision's commit lost its answer, as the store holds it
   * once it answers (asked every second): failed unless the store holds it ended already,
   * the commit made. Undefined if the server stops first.
   */
  async #settleEnd(id: string, failed: ActionFailure, pending: ActionPatch): Promise<Action | undefined> {
    const current = this.#live.action(id)!.view;
    const endTime = timestampNow();
    const view = Object.freeze({
      ...current,
      ...pending,
      status: ActionStatus.FAILED,
      error: failed.error,
      dataAccess: cancelledDataAccess(current.dataAccess),
      endTime,
      updateTime: endTime,
      queuePosition: 0,
    }) as Action;
    this.#o.logger.warn({ err: failed.cause, actionId: id }, "the answer to a new revision's commit was lost: asking the store whether it was made");
    for (;;) {
      try {
        return await this.#o.store.settleEnd(view);
      } catch {
        if (this.#closing) return undefined;
        await sleep(1000, undefined, { ref: false });
      }
    }
  }

  /**
   * Stores an ended action the database could not take when it ended, once it can
   * (every second), so that no server sees it running forever. Given up on when this
   * server stops: the others then end it, interrupted, once it has left.
   */
  async #recordEnd(view: Action): Promise<void> {
    this.#recording.add(view.id);
    try {
      await this.#retryEnd(view);
    } finally {
      this.#recording.delete(view.id);
    }
  }

  async #retryEnd(view: Action): Promise<void> {
    for (let attempt = 1; !this.#closing; attempt++) {
      await sleep(1000, undefined, { ref: false });
      if (this.#closing) return;
      try {
        await this.#o.store.putAction(view);
        this.#o.logger.info({ actionId: view.id, attempt }, "stored the end of an action the database could not take before");
        return;
      } catch {
        // Still unreachable, or this server lost its lease (then it stops).
      }
    }
  }

  /** The model's latest revision, from the cache when it holds the one known to be latest. */
  async #model(modelId: string, known?: bigint): Promise<ModelRecord | undefined> {
    // One server alone writes every revision: the live state knows the latest.
    const revision = known ?? (this.#cluster ? undefined : this.#live.model(modelId)?.revision);
    const cached = revision === undefined ? undefined : this.#instances.get(modelId, revision);
    if (cached) return cached;
    const record = await this.#o.store.getModel(modelId);
    if (record) this.#instances.put(record);
    return record;
  }

  /** The narrow interface through which a run reports its action's steps. */
  #reporter(id: string, pending: ActionPatch): RunReporter {
    const live = this.#live;
    const take = () => {
      const patch = { ...pending };
      for (const key of Object.keys(pending)) delete pending[key as keyof ActionPatch];
      return patch;
    };
    return {
      status: (status) => this.#transition(id, { ...take(), status }),
      dataAccess: (argument, patch) => this.#persist(live.updateDataAccess(id, argument, patch)),
      progress: (state, logTail, argument) => {
        const view =
          argument === undefined
            ? live.update(id, { ...(state ? { state } : {}), logTail })
            : live.updateDataAccess(id, argument, { ...(state ? { state } : {}), logTail });
        // A cluster's watchers on other servers see progress through the database (still at the throttled rate).
        if (this.#cluster) this.#o.store.putAction(view).catch(() => {});
      },
    };
  }

  async #transition(id: string, patch: ActionPatch): Promise<void> {
    await this.#persist(this.#live.update(id, patch));
  }

  /** Stores the action; a store that fails fails the action with store_failed. */
  async #persist(view: Action, payloads?: StoredPayloads): Promise<void> {
    try {
      await this.#o.store.putAction(view, payloads);
    } catch (error) {
      throw new ActionFailure({ code: "store_failed", message: `the store could not record the action: ${(error as Error).message}` }, [], error);
    }
  }

  /** What the history keeps beyond the view: payloads larger than inline, up to max_payload_bytes. */
  #storedPayloads(args: CallArgs | undefined, result: Payload | undefined): StoredPayloads | undefined {
    const { inlineBytes, maxJsonValueBytes } = this.#o.views;
    const max = this.#o.maxStoredPayloadBytes;
    if (max <= inlineBytes) return undefined;
    const payloads: StoredPayloads = {};
    if (args && hasPayloadBetween(args, inlineBytes, max)) payloads.args = argsView(args, max, maxJsonValueBytes);
    if (result && result.bytes > inlineBytes && result.bytes <= max) payloads.prediction = payloadArg(result, max, maxJsonValueBytes);
    return payloads.args || payloads.prediction ? payloads : undefined;
  }

  #failurePatch(id: string, error: unknown, running: Running, stoppedChild: ChildFailure["exit"]): ActionPatch {
    const reason: unknown = running.controller.signal.reason;
    const patch: ActionPatch = {};
    if (running.controller.signal.aborted && CancelReason.isReason(reason)) {
      // A timeout is a failure with a deadline reason; the others are cancels.
      patch.status = reason.by === "timeout" ? ActionStatus.FAILED : ActionStatus.CANCELLED;
      patch.error = create(ActionErrorSchema, { code: reason.kind, message: reason.message });
      if (error instanceof ChildFailure) patch.logTail = error.logTail;
      const exit = stoppedChild;
      const cancelledAt = running.cancelledAt ?? { phase: ActionStatus.QUEUED, at: performance.now() };
      patch.cancel = create(CancelOutcomeSchema, {
        by: reason.by,
        phase: cancelledAt.phase,
        forced: exit?.forced ?? false,
        ...(exit && exit.code !== null ? { exitCode: exit.code } : {}),
        signal: exit?.signal ?? "",
        stopDuration: durationFromMs(Math.round(performance.now() - cancelledAt.at)),
        cancelledBy: reason.caller,
      });
    } else {
      const { error: actionError, logTail } = failure(error, this.#o.logger);
      patch.status = ActionStatus.FAILED;
      patch.error = actionError;
      if (logTail.length) patch.logTail = logTail;
    }
    patch.dataAccess = cancelledDataAccess(this.#live.action(id)!.view.dataAccess);
    return patch;
  }

  /** The model's next revision (the first of a new model) with the instance a call made. */
  #nextRevision(actionId: string, modelType: string, model: ModelRecord | undefined, instance: Uint8Array): ModelRecord {
    const now = new Date();
    const change = { updateTime: now, instance, instanceSize: instance.byteLength, actionId };
    return model
      ? { ...model, ...change, revision: model.revision + 1n }
      : { ...change, id: newId("m"), modelType, revision: 1n, createTime: now, oldestRevision: 1n };
  }

  async #storeModel(record: ModelRecord): Promise<Model> {
    let meta: ModelMeta;
    try {
      meta = await this.#o.store.putModel(record);
      this.#instances.put({ ...meta, instance: record.instance });
    } catch (error) {
      if (PlinthError.is(error)) throw error;
      throw new ActionFailure({ code: "store_failed", message: `the store could not record the model: ${(error as Error).message}` });
    }
    return this.#live.putModel(modelMessage(meta));
  }

  /** A live action as handed out: its queue position as of now, payloads as `view` asks. */
  #handOut(live: LiveAction, view: ActionView): Action {
    const position = this.#live.queuePosition(live.view.id);
    const current = position === live.view.queuePosition ? live.view : (Object.freeze({ ...live.view, queuePosition: position }) as Action);
    return fullerView(current, live, view, this.#o.views);
  }

  #refuseIfClosing(): void {
    if (this.#closing) throw new PlinthError("shutting_down", "the server is shutting down; retry on another instance");
  }

  /** A model type some plugin declares: this server's, or in a cluster another server's. */
  async #requireModelType(modelType: string): Promise<void> {
    if (!modelType) throw invalid('model_type is required, e.g. "systest.Model" (ListPlugins lists them)');
    if (this.#o.plugins.modelType(modelType)) return;
    const names = new Set(this.#o.plugins.modelTypeNames());
    if (this.#cluster) {
      for (const server of await this.#cluster.servers()) {
        if (server.modelTypes.includes(modelType)) return;
        for (const name of server.modelTypes) names.add(name);
      }
    }
    const known = [...names].join(", ") || "none";
    throw invalid(`model_type ${quote(modelType)} is not declared by any loaded plugin; known model types: ${known}`);
  }

  /** The data-access functions calls may use: this server's, and in a cluster the other servers' too. */
  async #dataAccessNames(request: ActionRequest): Promise<(name: string) => boolean> {
    const local = (name: string) => this.#o.plugins.dataAccess(name) !== undefined;
    const named = (arg: Arg): boolean => arg.kind.case === "dataAccess";
    if (!this.#cluster || !(request.args.some(named) || Object.values(request.kwargs).some(named))) return local;
    const names = new Set(this.#o.plugins.dataAccessNames());
    for (const server of await this.#cluster.servers()) for (const name of server.dataAccess) names.add(name);
    return (name) => names.has(name);
  }

  /** The model as the live state holds it; in a cluster, one this server has not heard of yet is looked for first. */
  async #modelOf(modelId: string): Promise<Model> {
    requireId("model_id", modelId);
    if (!this.#live.model(modelId)) await this.#feed?.pull();
    const model = this.#live.model(modelId);
    if (!model) throw notFound(`model ${cut(modelId)} not found`);
    return model;
  }
}

/** Data access that never got to finish was cancelled with its action. */
function cancelledDataAccess(entries: readonly Action["dataAccess"][number][]): Action["dataAccess"] {
  return entries.map((entry) => (isEnded(entry) ? entry : Object.freeze({ ...entry, status: ActionStatus.CANCELLED })));
}

/** An error as the action records it; unknown errors are logged and shown as internal. */
function failure(error: unknown, logger?: Logger): { error: ActionError; logTail: string[] } {
  if (error instanceof ActionFailure) return { error: error.error, logTail: error.logTail };
  if (error instanceof ChildFailure) {
    const own = error.plugin && pluginErrorCode(error.plugin.code);
    // A PluginError with a code the engine cannot take keeps plugin_error, and says what it was.
    const message = error.plugin && !own ? `PluginError ${quote(error.plugin.code)}: ${error.message}` : error.message;
    const details = error.plugin?.details ? { details: error.plugin.details } : {};
    return {
      error: create(ActionErrorSchema, { code: own ?? error.code, message, stack: error.pluginStack, ...details }),
      logTail: error.logTail,
    };
  }
  if (PlinthError.is(error)) {
    // failed_precondition: a model write another server's change got to first (a cluster).
    const codes: Partial<Record<string, ActionErrorCode>> = {
      shutting_down: "shutting_down",
      not_found: "not_found",
      failed_precondition: "store_failed",
    };
    const code: ActionErrorCode = codes[error.kind] ?? "internal";
    return { error: create(ActionErrorSchema, { code, message: error.message }), logTail: [] };
  }
  logger?.error({ err: error }, "action failed with an internal error");
  return { error: create(ActionErrorSchema, { code: "internal", message: "internal error; see the server log" }), logTail: [] };
}

/** The action from the history, with the payloads it kept as `view` asks. */
function withStoredPayloads(action: Action, payloads: StoredPayloads | undefined, view: ActionView): Action {
  if (!payloads || view === ActionView.BASIC) return action;
  const fuller: Partial<Action> = {};
  if (payloads.prediction && action.result) fuller.result = create(ActionResultSchema, { ...action.result, prediction: payloads.prediction });
  if (view === ActionView.FULL && payloads.args) Object.assign(fuller, payloads.args);
  return { ...action, ...fuller };
}

function hasPayloadBetween(args: CallArgs, above: number, atMost: number): boolean {
  const visit = (node: CallArgs["args"][number]): boolean =>
    node.kind === "data_access" ? node.args.some(visit) || Object.values(node.kwargs).some(visit) : node.bytes > above && node.bytes <= atMost;
  return args.args.some(visit) || Object.values(args.kwargs).some(visit);
}
