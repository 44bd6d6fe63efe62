/**
 * One action's life once it runs, the same whichever runner runs it: wait for its model,
 * let an ActionRun resolve its data access and call the plugin (each step reported here,
 * through one reporter), store the instance it produced together with its end (invariant
 * 1), and end it — classifying any failure into the action's error. It returns the action
 * as it ended; it never reaches up into the runner or the engine.
 *
 * queued → (accessing_data → queued) → executing → (storing) → succeeded | failed | cancelled
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary } from "@bufbuild/protobuf";
import { durationFromMs, type Value as JsonValuePb, type Timestamp, timestampMs, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import {
  type Action,
  ActionBatchSchema,
  ActionCall,
  ActionCheckpointSchema,
  type ActionError,
  ActionErrorSchema,
  ActionResultSchema,
  ActionStatus,
  CancelOutcomeSchema,
  type DataAccessProgress,
} from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { CallKind, type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError, quote } from "../errors.ts";
import { ChildFailure } from "../process/child.ts";
import { DEFAULT_PRIORITY } from "../process/fair-queue.ts";
import type { ModelRef } from "../process/process-manager.ts";
import { modelMessage, modelMeta } from "../store/model-message.ts";
import { isCommitUnknown, type ModelMeta, type ModelRecord, type Store, type StoredAction, type StoredPayloads } from "../store/store.ts";
import { type ActionErrorCode, pluginErrorCode } from "./action-errors.ts";
import { ActionFailure } from "./action-failure.ts";
import { ActionRun, type DeclaredPlugins, type PluginCalls, type RunReporter } from "./action-run.ts";
import type { CallArgs } from "./args.ts";
import { CancelReason } from "./cancel-reason.ts";
import { newId } from "./ids.ts";
import { type ActionPatch, isEnded, type LiveAction, type LiveTable } from "./live-table.ts";
import type { ModelCache } from "./model-cache.ts";
import type { ModelLocks } from "./model-locks.ts";
import { type Payload, payloadArg, payloadFromValue } from "./payloads.ts";
import type { BatchInfo, BatchPolicy, PredictBatches } from "./predict-batches.ts";
import { nextAttempt, nextAttemptDelay } from "./retry-policy.ts";
import type { Waiting } from "./runs.ts";
import { argsView, type ViewLimits } from "./views.ts";

/**
 * How long a call's start (executing) waits to be stored with its next change: longer
 * than most short calls take under load, short enough that the other servers of a
 * cluster soon see a long one running.
 */
export const START_LINGER_MS = 50;

export const callKinds = {
  [ActionCall.CREATE_INSTANCE]: CallKind.INSTANTIATE,
  [ActionCall.FIT]: CallKind.FIT,
  [ActionCall.PREDICT]: CallKind.PREDICT,
} as const;

/** What every run needs, made once by the runner. */
export interface LifecycleDeps {
  table: LiveTable;
  store: Store;
  processes: PluginCalls;
  plugins: DeclaredPlugins;
  logger: Logger;
  /** Calls on one model, one at a time and in order. */
  locks: ModelLocks;
  /** Predicts of batched model types, grouped into calls. */
  batches: Pick<PredictBatches, "submit" | "hurry">;
  /** Instances by revision: a call on a revision held reads nothing from the store. */
  instances: ModelCache;
  views: ViewLimits;
  /** The history keeps a payload in full up to this size. */
  maxStoredPayloadBytes: number;
  /** Minimum time between two progress updates of one action. */
  progressIntervalMs: number;
}

export interface RunRequest {
  id: string;
  args: CallArgs & { dataAccess: readonly unknown[] };
  /** Aborted with a CancelReason to stop the run. */
  signal: AbortSignal;
  /**
   * The model's latest revision as the runner knows it once the run holds the model's lock
   * (one server: its live table; a cluster: the claim's); undefined: the store's latest.
   */
  knownRevision: (modelId: string) => bigint | undefined;
  /** Told of each progress report's view (a cluster stores it, for the other servers' watchers). */
  onProgress?: ((view: Action) => void) | undefined;
  /** Aborted once the server stops: a commit whose answer was lost is not asked about any longer. */
  closing: AbortSignal;
  /** Told what the run waits for (its next attempt, its model's lock), and when it runs again (undefined). */
  onWaiting?: ((what: Waiting | undefined) => void) | undefined;
  /** Aborted once the server drains: a wait for a next attempt that ends then holds on until the stop. */
  draining?: AbortSignal | undefined;
  /** The checkpoint an earlier attempt stored, as the store keeps it: a run resumed after a restart or on another server. */
  checkpoint?: Uint8Array | undefined;
}

export interface RunOutcome {
  /** The action as it ended (or as the store was left holding it, if the server stopped first). */
  live: LiveAction;
  /** Its end, which the store did not take: for the runner to store again once it can. */
  unrecorded?: Action | undefined;
}

/** Runs one action the live table holds, to its end: as many attempts as its retry policy allows. */
export async function runAction(deps: LifecycleDeps, request: RunRequest): Promise<RunOutcome> {
  const { table } = deps;
  const { id, signal } = request;
  const { modelId, modelType, call, priority } = table.action(id)!.view;
  const steps = new Steps(deps, id, request.onProgress, request.checkpoint && fromBinary(ValueSchema, request.checkpoint));
  const waits = new Waits(request);
  const own = priority || DEFAULT_PRIORITY;
  let patch: ActionPatch;
  let result: Payload | undefined;
  let run: ActionRun | undefined;
  let start: Timestamp | undefined;
  try {
    // A predict of a concurrent model type shares its model with up to max_replicas others (a
    // batched one with any number: its batches count against max_replicas); any other call has it alone.
    const batching = call === ActionCall.PREDICT ? deps.plugins.batching(modelType) : undefined;
    const shared = batching ? Number.POSITIVE_INFINITY : call === ActionCall.PREDICT ? deps.plugins.concurrentPredicts(modelType) : undefined;
    // A change waits for the batches filling on its model: they go now.
    if (modelId && shared === undefined) deps.batches.hurry(modelId);
    // Held through every attempt and the waits between them: the model's later calls wait.
    // It runs from the moment the lock is its: a drain must not take it for waiting meanwhile.
    using _lock = modelId ? await waits.during("model", () => deps.locks.acquire(modelId, signal, shared, own, () => waits.runs())) : undefined;
    steps.started();
    for (;;) {
      // A retry an earlier server scheduled (it stopped meanwhile) starts when it said.
      const due = table.action(id)!.view.nextAttemptTime;
      if (due) await waits.forAttempt(timestampMs(due) - Date.now(), () => table.update(id, { nextAttemptTime: undefined }));
      start = timestampNow();
      run = attemptRun(deps, steps, id, own);
      try {
        const ended = await attempt(deps, request, steps, run, batching);
        if ("live" in ended) return ended;
        ({ patch, result } = ended);
        break;
      } catch (error) {
        const delay = retryDelay(deps, id, error, signal);
        if (delay === undefined) throw error;
        await steps.retrying(failure(error).error, start, delay);
        deps.logger.info(
          { actionId: id, attempt: table.action(id)!.view.attempt, delayMs: delay, err: error },
          "the action's attempt failed: retrying",
        );
      }
    }
  } catch (error) {
    // A server that stops leaves an action with a retry policy to its next start, or to
    // another server of the cluster: queued in the store, with its request.
    if (await leftAtShutdown(deps, steps, waits, id, signal, start)) return { live: table.action(id)! };
    result = undefined;
    patch = { ...steps.end(), ...failurePatch(deps, id, error, signal, run?.stoppedChild) };
  }
  const ended = table.finish(id, { ...patch, nextAttemptTime: undefined, endTime: timestampNow() }, result);
  try {
    await persist(deps.store, withStates(table, ended.view), storedPayloads(deps, undefined, result));
  } catch (error) {
    // The action ended but the history could not record it: say so on the action.
    deps.logger.error({ err: error, actionId: id }, "storing an ended action failed");
    const { error: stored } = failure(error);
    const view = table.action(id)
      ? table.update(id, { status: ActionStatus.FAILED, error: stored })
      : (Object.freeze({ ...ended.view, status: ActionStatus.FAILED, error: stored }) as Action);
    return { live: { ...ended, view }, unrecorded: view };
  }
  return { live: ended };
}

/** The ended action as the history keeps it: with its reported states, which the live view (and so the streams) does not carry. */
function withStates(table: LiveTable, view: Action): Action {
  const states = table.states(view.id);
  return states.length ? (Object.freeze({ ...view, states: [...states] }) as Action) : view;
}

/**
 * What a run waits for, told to the runner (a drain does not wait for a run that waits),
 * and the wait for a next attempt: one that ends while the server drains holds on until
 * the stop, which leaves the action queued.
 */
class Waits {
  readonly #request: RunRequest;
  /** Set from a failed attempt until the next one starts. */
  retryPending = false;
  /** What the run waits for now. */
  now: Waiting | undefined;

  constructor(request: RunRequest) {
    this.#request = request;
  }

  async during<T>(what: Waiting, wait: () => Promise<T>): Promise<T> {
    this.#set(what);
    try {
      return await wait();
    } finally {
      this.#set(undefined);
    }
  }

  /** Waits `ms` for the next attempt, and while the server drains; `due` once it may start. */
  async forAttempt(ms: number, due: () => void): Promise<void> {
    const { signal, draining } = this.#request;
    this.retryPending = true;
    await this.during("retry", async () => {
      if (ms > 0) await pause(ms, signal);
      if (draining?.aborted) await pause(Number.POSITIVE_INFINITY, signal);
    });
    signal.throwIfAborted();
    this.retryPending = false;
    due();
  }

  /** It runs again. */
  runs(): void {
    this.#set(undefined);
  }

  #set(what: Waiting | undefined): void {
    this.now = what;
    this.#request.onWaiting?.(what);
  }
}

/**
 * Whether a stop of the server (not a cancel, not a timeout) leaves the action to its next
 * start, or to another server of the cluster: one with a retry policy, waiting for its next
 * attempt or its model, stays as stored; one whose attempt ran has that attempt fail
 * `interrupted` (as a crash of the server would) while it has attempts left.
 */
async function leftAtShutdown(
  deps: LifecycleDeps,
  steps: Steps,
  waits: Waits,
  id: string,
  signal: AbortSignal,
  start: Timestamp | undefined,
): Promise<boolean> {
  const reason: unknown = signal.reason;
  const view = deps.table.action(id)!.view;
  if (!CancelReason.isReason(reason) || reason.by !== "shutdown" || !view.retry) return false;
  if (waits.retryPending || waits.now === "model") return true;
  const delay = nextAttemptDelay(view, "interrupted");
  if (delay === undefined) return false;
  const error = create(ActionErrorSchema, { code: "interrupted", message: "the server stopped while the attempt ran" });
  try {
    await steps.retrying(error, start ?? timestampNow(), delay);
    return true;
  } catch {
    return false; // the store refused it: the action ends as any stopped one
  }
}

/** The run of the action's current attempt: it tells the plugin which attempt it is, and waits for a child at the action's priority. */
function attemptRun(deps: LifecycleDeps, steps: Steps, id: string, own: number): ActionRun {
  const { modelId, createdBy, attempt } = deps.table.action(id)!.view;
  // Holding its model, it waits for a child at the best priority of the calls waiting behind it.
  const inherited = () => Math.min(own, (modelId && deps.locks.waitingPriority(modelId)) || own);
  const order = () => ({ priority: inherited(), caller: createdBy });
  return new ActionRun(deps, steps, { actionId: id, modelId, attempt: attempt || 1 }, order, steps.latestCheckpoint);
}

/**
 * One attempt: the model's latest revision, the plugin's call, and (for a call that made
 * an instance) the commit that ends the action. Resolves with the action's end, or with
 * the success to record; throws the attempt's failure.
 */
async function attempt(
  deps: LifecycleDeps,
  request: RunRequest,
  steps: Steps,
  run: ActionRun,
  batching: BatchPolicy | undefined,
): Promise<RunOutcome | { patch: ActionPatch; result: Payload | undefined }> {
  const { table } = deps;
  const { id, signal } = request;
  const { modelId, modelType, call } = table.action(id)!.view;
  const model = modelId ? await modelRef(deps, modelId, request.knownRevision(modelId)) : undefined;
  if (modelId && !model) throw new ActionFailure({ code: "not_found", message: `model ${modelId} was deleted` });
  if (model) steps.model(model.meta.revision);
  const jsonForm = table.action(id)!.jsonForm;
  const kind = callKinds[call as keyof typeof callKinds];
  // Fit, and a predict that may update its model, return what becomes the next revision.
  const next = model ? model.meta.revision + 1n : undefined;
  const batched = batching && { policy: batching, hurry: () => deps.locks.changeWaiting(modelId) };
  const out = await run.execute(
    { kind, modelType, model: model?.ref, nextRevision: next, jsonForm, batched },
    request.args,
    request.args.dataAccess.length,
    signal,
  );
  const prediction = call === ActionCall.PREDICT ? out.value : undefined;
  const { inlineBytes, maxJsonValueBytes } = deps.views;
  const succeeded = (stored?: Model): ActionPatch => ({
    ...steps.end(),
    status: ActionStatus.SUCCEEDED,
    logTail: out.logTail,
    ...(stored && !modelId ? { modelId: stored.id } : {}),
    result: create(ActionResultSchema, {
      ...(stored ? { model: stored } : {}),
      ...(prediction ? { prediction: payloadArg(prediction, inlineBytes, maxJsonValueBytes) } : {}),
    }),
  });
  if (out.instance === undefined) return { patch: succeeded(), result: prediction };
  let committed = false;
  try {
    await steps.status(ActionStatus.STORING);
    const record = nextRevision(id, modelType, model?.meta, out.instance);
    const live = await endWithRevision(deps, request, record, succeeded, prediction);
    committed = live.view.status === ActionStatus.SUCCEEDED;
    return { live };
  } finally {
    // The child that made the instance keeps it as the next revision. Not stored (or not
    // known to be), it must go while the model is still locked: the model's next call
    // may make that revision again, with other bytes.
    if (model && !committed) deps.processes.forget(model.meta.id, model.meta.revision);
  }
}

/** The wait before the action's next attempt, when its policy gives the failure one; undefined: it ends now. */
function retryDelay(deps: LifecycleDeps, id: string, error: unknown, signal: AbortSignal): number | undefined {
  if (signal.aborted) return undefined;
  return nextAttemptDelay(deps.table.action(id)!.view, failure(error).error.code);
}

/** Resolves after `ms` (the global timer: a fake clock runs it; Infinity: never); rejects with the signal's reason first. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    signal.throwIfAborted();
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    // Infinite: until the signal aborts.
    const timer = Number.isFinite(ms)
      ? setTimeout(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        }, ms)
      : undefined;
    timer?.unref();
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The steps a run reports: stored and published (status, data access), or published at a
 * bounded rate (progress). The start time goes out with the first step after the model's
 * lock was taken, or with the end.
 */
class Steps implements RunReporter {
  readonly #deps: LifecycleDeps;
  readonly #id: string;
  readonly #onProgress: ((view: Action) => void) | undefined;
  /** What the next step carries: when it left its model's queue, the revision it runs on. */
  #pending: ActionPatch = {};
  /** The last checkpoint stored: what the next attempt starts from. */
  #checkpoint: Value | undefined;

  constructor(deps: LifecycleDeps, id: string, onProgress: ((view: Action) => void) | undefined, checkpoint: Value | undefined) {
    this.#deps = deps;
    this.#id = id;
    this.#onProgress = onProgress;
    this.#checkpoint = checkpoint;
  }

  get latestCheckpoint(): Value | undefined {
    return this.#checkpoint;
  }

  /**
   * Stores the checkpoint with the action, then shows it (its size, and its value in full
   * up to inline_payload_bytes): what a watcher sees of it is stored, for the next attempt
   * on any server.
   */
  async checkpoint(value: Value, encoded: Uint8Array): Promise<void> {
    const { table, store, views } = this.#deps;
    const view = table.action(this.#id)!.view;
    const shown = payloadArg(payloadFromValue(value, "json"), views.inlineBytes, views.maxJsonValueBytes);
    const size = BigInt(encoded.byteLength);
    const checkpoint = create(ActionCheckpointSchema, { attempt: view.attempt || 1, time: timestampNow(), size, value: shown });
    await persist(store, Object.freeze({ ...view, checkpoint }) as Action, { checkpoint: encoded });
    this.#checkpoint = value;
    const live = table.action(this.#id);
    if (live && !isEnded(live.view)) table.update(this.#id, { checkpoint });
  }

  /** The action left its model's queue now. */
  started(): void {
    this.#pending = { ...this.#pending, startTime: timestampNow() };
  }

  /** The model's revision the call runs on. */
  model(revision: bigint): void {
    this.#pending = { ...this.#pending, modelRevision: revision };
  }

  /** What the end adds that no step carried yet. */
  end(): ActionPatch {
    return this.#takeStart();
  }

  #takeStart(): ActionPatch {
    const pending = this.#pending;
    this.#pending = {};
    return pending;
  }

  /**
   * The attempt that started at `start` failed with `error` and the next one starts in
   * `delayMs`: the action waits again (QUEUED), its attempt counted up, the failed one
   * listed with its error; its data access runs again with the next attempt.
   */
  retrying(error: ActionError, start: Timestamp, delayMs: number): Promise<void> {
    const { table, store } = this.#deps;
    const patch: ActionPatch = { ...this.#takeStart(), ...nextAttempt(table.action(this.#id)!.view, error, start, delayMs) };
    return persist(store, table.update(this.#id, patch));
  }

  status(status: ActionStatus, batch?: BatchInfo, lingerMs = 0): Promise<void> {
    const patch: ActionPatch = { ...this.#takeStart(), status, ...(batch ? { batch: create(ActionBatchSchema, batch) } : {}) };
    return persist(this.#deps.store, this.#deps.table.update(this.#id, patch), undefined, lingerMs);
  }

  executing(batch?: BatchInfo): Promise<void> {
    return this.status(ActionStatus.EXECUTING, batch, START_LINGER_MS);
  }

  dataAccess(argument: string, patch: Partial<DataAccessProgress>): Promise<void> {
    return persist(this.#deps.store, this.#deps.table.updateDataAccess(this.#id, argument, patch));
  }

  progress(state: JsonValuePb | undefined, logTail: string[], argument?: string): void {
    const { table } = this.#deps;
    const view =
      argument === undefined
        ? table.update(this.#id, { ...(state ? { state } : {}), logTail })
        : table.updateDataAccess(this.#id, argument, { ...(state ? { state } : {}), logTail });
    if (argument === undefined && state) table.recordState(this.#id, state);
    this.#onProgress?.(view);
  }
}

/** The model a call runs on: its latest revision, and that revision's bytes when a child needs them. */
interface CallModel {
  meta: ModelMeta;
  ref: ModelRef;
}

/**
 * The model's latest revision. Known to be `known` and in the live table, its bytes are
 * read only when the child the call gets does not hold it (from the cache, else the
 * store); else the store is read now.
 */
async function modelRef(deps: LifecycleDeps, modelId: string, known?: bigint): Promise<CallModel | undefined> {
  const cached = known === undefined ? undefined : deps.instances.get(modelId, known);
  if (cached) return callModel(deps, cached, cached.instance);
  const live = known === undefined ? undefined : deps.table.model(modelId);
  if (live && live.revision === known) return callModel(deps, modelMeta(live));
  const record = await deps.store.getModel(modelId);
  if (!record) return undefined;
  deps.instances.put(record);
  return callModel(deps, record, record.instance);
}

function callModel(deps: LifecycleDeps, meta: ModelMeta, instance?: Uint8Array): CallModel {
  const { id, revision, instanceSize } = meta;
  const bytes = instance ? () => Promise.resolve(instance) : () => instanceOf(deps, id, revision);
  return { meta, ref: { modelId: id, revision, size: instanceSize, bytes } };
}

/** A revision's instance: from the cache, else the store (and then cached). */
async function instanceOf(deps: LifecycleDeps, id: string, revision: bigint): Promise<Uint8Array> {
  const cached = deps.instances.get(id, revision);
  if (cached) return cached.instance;
  const record = await deps.store.getModel(id, revision);
  if (!record) throw new ActionFailure({ code: "not_found", message: `model ${id} revision ${revision} is no longer stored` });
  deps.instances.put(record);
  return record.instance;
}

/**
 * Ends an action whose call made a new instance: the model's next revision and the
 * action's success are one commit (invariant 1), and the action ends once it is made.
 * A commit that failed throws store_failed: the model is as it was. One whose answer
 * was lost ends the action as the store holds it once it answers again: SUCCEEDED with
 * the revision if the commit was made.
 */
async function endWithRevision(
  deps: LifecycleDeps,
  request: RunRequest,
  record: ModelRecord,
  succeeded: (stored: Model) => ActionPatch,
  prediction: Payload | undefined,
): Promise<LiveAction> {
  const { table, store } = deps;
  const { id } = request;
  let meta: ModelMeta | undefined;
  let patch: ActionPatch = {};
  const ended = (stored: ModelMeta): StoredAction => {
    meta = stored;
    const endTime = timestampNow();
    patch = { ...succeeded(modelMessage(stored)), endTime, updateTime: endTime };
    // As table.finish shows it once committed: nothing else changes the action meanwhile.
    const view = Object.freeze({ ...table.action(id)!.view, ...patch, queuePosition: 0 }) as Action;
    return { action: withStates(table, view), payloads: storedPayloads(deps, undefined, prediction) };
  };
  try {
    await store.putModel(record, ended);
  } catch (error) {
    const failed = new ActionFailure(
      { code: "store_failed", message: `the store could not record the model's new revision: ${(error as Error).message}` },
      [],
      error,
    );
    if (!isCommitUnknown(error)) throw failed;
    const held = await settleEnd(deps, id, failed, request.closing);
    // The server stops first: the action stays as the store has it, for the next start, or the other servers, to end.
    if (!held) return table.action(id)!;
    if (held.status !== ActionStatus.SUCCEEDED) {
      const { status, error: stored, dataAccess, endTime, updateTime } = held;
      return table.finish(id, {
        status,
        dataAccess,
        ...(stored ? { error: stored } : {}),
        ...(endTime ? { endTime } : {}),
        ...(updateTime ? { updateTime } : {}),
      });
    }
    deps.logger.info({ actionId: id, revision: record.revision }, "the new revision's commit had been made: the action succeeded");
  }
  deps.instances.put({ ...meta!, instance: record.instance });
  // A cluster's feed may have brought it, or a later one, meanwhile.
  if ((table.model(meta!.id)?.revision ?? 0n) < meta!.revision) table.putModel(modelMessage(meta!));
  return table.finish(id, patch, prediction);
}

/**
 * The end of an action whose revision's commit lost its answer, as the store holds it
 * once it answers (asked every second): failed unless the store holds it ended already,
 * the commit made. Undefined if the server stops first.
 */
async function settleEnd(deps: LifecycleDeps, id: string, failed: ActionFailure, closing: AbortSignal): Promise<Action | undefined> {
  const current = deps.table.action(id)!.view;
  const endTime = timestampNow();
  const view = Object.freeze({
    ...current,
    status: ActionStatus.FAILED,
    error: failed.error,
    dataAccess: cancelledDataAccess(current.dataAccess),
    endTime,
    updateTime: endTime,
    queuePosition: 0,
  }) as Action;
  deps.logger.warn({ err: failed.cause, actionId: id }, "the answer to a new revision's commit was lost: asking the store whether it was made");
  for (;;) {
    try {
      return await deps.store.settleEnd(view);
    } catch {
      if (closing.aborted) return undefined;
      await sleep(1000, undefined, { ref: false });
    }
  }
}

/** The model's next revision (the first of a new model) with the instance a call made. */
function nextRevision(actionId: string, modelType: string, model: ModelMeta | undefined, instance: Uint8Array): ModelRecord {
  const now = new Date();
  const change = { updateTime: now, instance, instanceSize: instance.byteLength, actionId };
  return model
    ? { ...model, ...change, revision: model.revision + 1n }
    : { ...change, id: newId("m"), modelType, revision: 1n, createTime: now, oldestRevision: 1n };
}

function failurePatch(deps: LifecycleDeps, id: string, error: unknown, signal: AbortSignal, stoppedChild: ChildFailure["exit"]): ActionPatch {
  const reason: unknown = signal.reason;
  const patch: ActionPatch = {};
  if (signal.aborted && CancelReason.isReason(reason)) {
    // A timeout is a failure with a deadline reason; the others are cancels.
    patch.status = reason.by === "timeout" ? ActionStatus.FAILED : ActionStatus.CANCELLED;
    patch.error = create(ActionErrorSchema, { code: reason.kind, message: reason.message });
    if (error instanceof ChildFailure) patch.logTail = error.logTail;
    const exit = stoppedChild;
    patch.cancel = create(CancelOutcomeSchema, {
      by: reason.by,
      phase: reason.phase,
      forced: exit?.forced ?? false,
      ...(exit && exit.code !== null ? { exitCode: exit.code } : {}),
      signal: exit?.signal ?? "",
      stopDuration: durationFromMs(Math.round(performance.now() - reason.at)),
      cancelledBy: reason.caller,
      // Its plugin answered the cancel itself: no signal, the child stays for the next call.
      childKept: !exit && error instanceof ChildFailure && reason.phase === ActionStatus.EXECUTING,
    });
  } else {
    const { error: actionError, logTail } = failure(error, deps.logger);
    patch.status = ActionStatus.FAILED;
    patch.error = actionError;
    if (logTail.length) patch.logTail = logTail;
  }
  patch.dataAccess = cancelledDataAccess(deps.table.action(id)!.view.dataAccess);
  return patch;
}

/** Stores the action (`lingerMs`: Store.putAction); a store that fails fails the action with store_failed. */
export async function persist(store: Store, view: Action, payloads?: StoredPayloads, lingerMs = 0): Promise<void> {
  try {
    await store.putAction(view, payloads, lingerMs);
  } catch (error) {
    throw new ActionFailure({ code: "store_failed", message: `the store could not record the action: ${(error as Error).message}` }, [], error);
  }
}

/** What the history keeps beyond the view: payloads larger than inline, up to max_payload_bytes. */
export function storedPayloads(
  deps: Pick<LifecycleDeps, "views" | "maxStoredPayloadBytes">,
  args: CallArgs | undefined,
  result: Payload | undefined,
): StoredPayloads | undefined {
  const { inlineBytes, maxJsonValueBytes } = deps.views;
  const max = deps.maxStoredPayloadBytes;
  if (max <= inlineBytes) return undefined;
  const payloads: StoredPayloads = {};
  if (args && hasPayloadBetween(args, inlineBytes, max)) payloads.args = argsView(args, max, maxJsonValueBytes);
  if (result && result.bytes > inlineBytes && result.bytes <= max) payloads.prediction = payloadArg(result, max, maxJsonValueBytes);
  return payloads.args || payloads.prediction ? payloads : undefined;
}

function hasPayloadBetween(args: CallArgs, above: number, atMost: number): boolean {
  const visit = (node: CallArgs["args"][number]): boolean =>
    node.kind === "data_access" ? node.args.some(visit) || Object.values(node.kwargs).some(visit) : node.bytes > above && node.bytes <= atMost;
  return args.args.some(visit) || Object.values(args.kwargs).some(visit);
}

/** Data access that never got to finish was cancelled with its action. */
export function cancelledDataAccess(entries: readonly Action["dataAccess"][number][]): Action["dataAccess"] {
  return entries.map((entry) => (isEnded(entry) ? entry : Object.freeze({ ...entry, status: ActionStatus.CANCELLED })));
}

/** An error as the action records it; unknown errors are logged and shown as internal. */
export function failure(error: unknown, logger?: Logger): { error: ActionError; logTail: string[] } {
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
