/**
 * The lifecycle of one action: wait for its model, resolve its data access, run the
 * plugin call in a child, store what it produced; or end failed or cancelled, with
 * how it was stopped.
 *
 * queued → accessing_data → (queued) → executing → storing → succeeded | failed | cancelled
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampNow, type Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import {
  type Action,
  ActionCall,
  type ActionError,
  ActionErrorSchema,
  ActionResultSchema,
  ActionStatus,
  CancelOutcomeSchema,
  type DataAccessProgress,
} from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { CallKind, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError } from "../errors.ts";
import { type ChildExit, ChildFailure } from "../process/child.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import type { ModelRecord, Store } from "../store/store.ts";
import type { ActionQueue } from "./action-queue.ts";
import { nullValue, toArg } from "./args.ts";
import { CancelReason } from "./cancel-reason.ts";
import { type ResolvedArgs, resolveArgs } from "./data-access.ts";
import { newId } from "./ids.ts";
import type { ModelLocks } from "./model-locks.ts";
import type { PluginRegistry } from "./plugins.ts";
import { Throttle } from "./throttle.ts";

/** What a run needs from the engine. */
export interface RunContext {
  store: Store;
  processes: ProcessManager;
  plugins: PluginRegistry;
  locks: ModelLocks;
  queue: ActionQueue;
  logger: Logger;
  /** Minimum time between two progress revisions of one action. */
  progressIntervalMs: number;
  /**
   * Publishes the action with a new revision, and stores it unless `live` (progress
   * only: the history keeps status changes, not every report).
   */
  changed(action: Action, live?: boolean): void;
  /** Stores a model revision and publishes it. */
  storeModel(record: ModelRecord): Promise<Model>;
}

const ENDED = new Set([ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED]);

export function isEnded(action: { status: ActionStatus }): boolean {
  return ENDED.has(action.status);
}

/** Data access that never got to finish was cancelled with its action. */
export function cancelUnfinishedDataAccess(action: Action): void {
  for (const entry of action.dataAccess) {
    if (!isEnded(entry)) entry.status = ActionStatus.CANCELLED;
  }
}

const callKinds: Record<ActionCall, CallKind> = {
  [ActionCall.UNSPECIFIED]: CallKind.UNSPECIFIED,
  [ActionCall.CREATE_INSTANCE]: CallKind.INSTANTIATE,
  [ActionCall.FIT]: CallKind.FIT,
  [ActionCall.PREDICT]: CallKind.PREDICT,
};

/** A failure recorded on the action as it is. */
class ActionFailure extends Error {
  readonly error: ActionError;
  readonly logTail: string[];
  constructor(error: MessageInitShape<typeof ActionErrorSchema>, logTail: string[] = []) {
    super(error.message);
    this.error = create(ActionErrorSchema, error);
    this.logTail = logTail;
  }
}

export class ActionRun {
  readonly action: Action;
  readonly done: Promise<void>;
  readonly #ctx: RunContext;
  readonly #controller = new AbortController();
  #cancelledAt: { phase: ActionStatus; at: number } | undefined;
  /** How the child of the call that was running when the cancel came ended. */
  #stoppedChild: ChildExit | undefined;
  #timeout: ReturnType<typeof setTimeout> | undefined;

  /** The arguments as sent, blobs included: the action shows them without. */
  readonly #args: { args: Arg[]; kwargs: Record<string, Arg> };

  constructor(ctx: RunContext, action: Action, args: { args: Arg[]; kwargs: Record<string, Arg> }, timeoutMs: number | undefined) {
    this.#ctx = ctx;
    this.action = action;
    this.#args = args;
    if (timeoutMs !== undefined) {
      this.#timeout = setTimeout(
        () => this.cancel(new CancelReason("timeout", `the action did not end within its timeout of ${timeoutMs / 1000} s`)),
        timeoutMs,
      );
      this.#timeout.unref();
    }
    this.#enterQueue();
    ctx.changed(action);
    this.done = this.#run().finally(() => clearTimeout(this.#timeout));
  }

  /** Stops the action: at once if queued, else through the cancel ladder. Idempotent. */
  cancel(reason: CancelReason): void {
    if (this.#controller.signal.aborted || isEnded(this.action)) return;
    this.#cancelledAt = { phase: this.action.status, at: performance.now() };
    this.#controller.abort(reason);
  }

  #set(status: ActionStatus): void {
    if (this.action.status === ActionStatus.QUEUED) this.#ctx.queue.leave(this.action.id);
    this.action.status = status;
    if (status === ActionStatus.QUEUED) this.#enterQueue();
    this.#ctx.changed(this.action);
  }

  #enterQueue(): void {
    this.#ctx.queue.enter(this.action.id);
  }

  async #run(): Promise<void> {
    const { action } = this;
    const signal = this.#controller.signal;
    const ctx = this.#ctx;
    try {
      using _lock = action.modelId ? await ctx.locks.acquire(action.modelId, signal) : undefined;
      action.startTime = timestampNow();
      const model = action.modelId ? await ctx.store.getModel(action.modelId) : undefined;
      if (action.modelId && !model) throw new ActionFailure({ code: "not_found", message: `model ${action.modelId} was deleted` });
      const resolved = await this.#resolveDataAccess(signal);
      const outcome = await this.#call(
        ctx.plugins.modelType(action.modelType)!.target,
        {
          kind: callKinds[action.call],
          target: action.modelType,
          instance: model?.instance ?? new Uint8Array(),
          ...resolved,
        },
        signal,
        () => this.#set(ActionStatus.EXECUTING),
        (state, logTail) => {
          action.state = state;
          action.logTail = logTail;
        },
      );
      action.logTail = outcome.logTail;
      const { result } = outcome;
      let stored: Model | undefined;
      if (result.instance !== undefined) {
        this.#set(ActionStatus.STORING);
        stored = await this.#storeRevision(model, result.instance);
      }
      action.result = create(ActionResultSchema, {
        ...(stored ? { model: stored } : {}),
        ...(action.call === ActionCall.PREDICT ? { prediction: toArg(result.value) } : {}),
      });
      action.status = ActionStatus.SUCCEEDED;
    } catch (error) {
      this.#fail(error, signal);
    }
    ctx.queue.leave(action.id);
    action.endTime = timestampNow();
    ctx.changed(action);
  }

  /** One plugin call, its progress published at a bounded rate. */
  async #call(
    target: Parameters<ProcessManager["call"]>[0],
    call: Parameters<ProcessManager["call"]>[1],
    signal: AbortSignal,
    onStart: () => void,
    onProgress: (state: JsonValuePb | undefined, logTail: string[]) => void,
  ) {
    const publish = new Throttle(() => this.#ctx.changed(this.action, true), this.#ctx.progressIntervalMs);
    try {
      return await this.#ctx.processes.call(target, call, {
        signal,
        onStart,
        onProgress: (state, logTail) => {
          onProgress(state, logTail);
          publish.request();
        },
      });
    } catch (error) {
      if (error instanceof ChildFailure && signal.aborted && error.exit) this.#stoppedChild ??= error.exit;
      throw error;
    } finally {
      publish.cancel();
    }
  }

  #fail(error: unknown, signal: AbortSignal): void {
    const { action } = this;
    const reason: unknown = signal.reason;
    if (signal.aborted && CancelReason.isReason(reason)) {
      // A timeout is a failure with a deadline reason; the others are cancels.
      action.status = reason.by === "timeout" ? ActionStatus.FAILED : ActionStatus.CANCELLED;
      action.error = create(ActionErrorSchema, { code: reason.kind, message: reason.message });
      if (error instanceof ChildFailure) action.logTail = error.logTail;
      const exit = this.#stoppedChild;
      action.cancel = create(CancelOutcomeSchema, {
        by: reason.by,
        phase: this.#cancelledAt?.phase ?? ActionStatus.QUEUED,
        forced: exit?.forced ?? false,
        ...(exit && exit.code !== null ? { exitCode: exit.code } : {}),
        signal: exit?.signal ?? "",
        stopDuration: durationFromMs(Math.round(performance.now() - (this.#cancelledAt?.at ?? performance.now()))),
      });
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
      this.#ctx.logger.error({ err: error, actionId: action.id }, "action failed with an internal error");
      action.status = ActionStatus.FAILED;
      action.error = create(ActionErrorSchema, { code: "internal", message: "internal error; see the server log" });
    }
    cancelUnfinishedDataAccess(action);
  }

  async #storeRevision(model: ModelRecord | undefined, instance: Uint8Array): Promise<Model> {
    const { action } = this;
    const now = new Date();
    const change = { updateTime: now, instance, instanceSize: instance.byteLength, actionId: action.id };
    const record: ModelRecord = model
      ? { ...model, ...change, revision: model.revision + 1n }
      : { ...change, id: newId("m"), modelType: action.modelType, revision: 1n, createTime: now, oldestRevision: 1n };
    if (!model) action.modelId = record.id;
    return this.#ctx.storeModel(record);
  }

  async #resolveDataAccess(signal: AbortSignal): Promise<ResolvedArgs> {
    const { action } = this;
    const { args, kwargs } = this.#args;
    if (action.dataAccess.length === 0) return resolveArgs(args, kwargs, unreachable, signal);
    this.#set(ActionStatus.ACCESSING_DATA);
    const entries = new Map(action.dataAccess.map((e) => [e.argument, e]));
    const resolved = await resolveArgs(
      args,
      kwargs,
      (path, name, args, callSignal) => this.#callDataAccess(entries.get(path)!, name, args, callSignal),
      signal,
    );
    // Waiting for a child again, now for the main call.
    this.#set(ActionStatus.QUEUED);
    return resolved;
  }

  async #callDataAccess(entry: DataAccessProgress, name: string, args: ResolvedArgs, signal: AbortSignal): Promise<Value> {
    const update = (change: Partial<DataAccessProgress>) => {
      Object.assign(entry, change);
      this.#ctx.changed(this.action);
    };
    try {
      const outcome = await this.#call(
        this.#ctx.plugins.dataAccess(name)!.target,
        { kind: CallKind.DATA_ACCESS, target: name, ...args },
        signal,
        () => update({ status: ActionStatus.EXECUTING, startTime: timestampNow() }),
        (state) => {
          if (state) entry.state = state;
        },
      );
      update({ status: ActionStatus.SUCCEEDED, endTime: timestampNow() });
      return outcome.result.value ?? nullValue();
    } catch (error) {
      // Stopped because the action was cancelled, or because a sibling failed.
      const stopped = signal.aborted && !(error instanceof ChildFailure && error.code !== "cancelled");
      const message = error instanceof Error ? error.message : String(error);
      const stack = error instanceof ChildFailure ? error.pluginStack : "";
      update({
        status: stopped ? ActionStatus.CANCELLED : ActionStatus.FAILED,
        endTime: timestampNow(),
        error: create(ActionErrorSchema, { code: error instanceof ChildFailure ? error.code : "cancelled", message, stack }),
      });
      if (stopped) throw error;
      throw new ActionFailure(
        { code: "data_access_failed", message: `data access "${name}" for ${entry.argument} failed: ${message}`, stack },
        error instanceof ChildFailure ? error.logTail : [],
      );
    }
  }
}

function unreachable(): never {
  throw new Error("no data-access arguments to resolve");
}
