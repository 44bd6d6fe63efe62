/**
 * The plugin side of one action: resolve its data access, then call the plugin in a
 * child, reporting each step through a RunReporter — the one way a run reaches the
 * engine. The engine does the rest (the model's lock, storing what the call produced,
 * ending the action); the run returns the plugin's result or throws.
 *
 * queued → accessing_data → queued → executing
 */
import { create } from "@bufbuild/protobuf";
import { type Value as JsonValuePb, timestampNow } from "@bufbuild/protobuf/wkt";
import { ActionErrorSchema, ActionStatus, type DataAccessProgress } from "../../gen/plinth/v1/action_pb.ts";
import { CallKind, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type ChildExit, ChildFailure } from "../process/child.ts";
import type { OrderOf } from "../process/fair-queue.ts";
import type { CallOutcome, ModelRef, PluginCall, ProcessManager } from "../process/process-manager.ts";
import type { PluginTarget } from "../process/runtimes.ts";
import { ActionFailure } from "./action-failure.ts";
import type { CallArgs } from "./args.ts";
import { resolvedProblems } from "./check-args.ts";
import { type ResolvedArgs, resolveArgs } from "./data-access.ts";
import { type JsonForm, type Payload, payloadFromValue } from "./payloads.ts";
import type { PluginRegistry } from "./plugins.ts";
import type { BatchInfo, BatchPolicy, PredictBatches } from "./predict-batches.ts";
import { Throttle } from "./throttle.ts";

/** How a run tells the engine what happens to its action. */
export interface RunReporter {
  /** A status change (with the batch the call went in, if it did): stored and published. Rejects when it could not be stored. */
  status(status: ActionStatus, batch?: BatchInfo): Promise<void>;
  /**
   * The call reached its child (in this batch, if it went in one): published at once,
   * stored with the call's next change unless that is slow to come (the store's linger).
   * Rejects when it could not be stored.
   */
  executing(batch?: BatchInfo): Promise<void>;
  /** A data-access argument's progress: stored and published. */
  dataAccess(argument: string, patch: Partial<DataAccessProgress>): Promise<void>;
  /**
   * The plugin's latest report and output, or a data-access function's (`argument`
   * set): published at a bounded rate, not stored.
   */
  progress(state: JsonValuePb | undefined, logTail: string[], argument?: string): void;
  /** A checkpoint the plugin's call stored (ctx.checkpoint(value)), with its encoding: resolves once stored. */
  checkpoint(value: Value, encoded: Uint8Array): Promise<void>;
}

/**
 * What a run calls plugins through: the process manager (a fake in the fast tests). It
 * also hears of revisions no child should keep (forget), and says which models its
 * children hold (held).
 */
export type PluginCalls = Pick<ProcessManager, "call" | "forget" | "held">;

/** What a run asks of the loaded plugins. */
export type DeclaredPlugins = Pick<
  PluginRegistry,
  "modelType" | "dataAccess" | "check" | "modelTypeNames" | "dataAccessNames" | "concurrentPredicts" | "batching"
>;

/** A batched predict's call: how its model type batches, and whether a change waits on its model (then its batch goes at once). */
export interface Batched {
  policy: BatchPolicy;
  hurry(): boolean;
}

export interface RunDeps {
  processes: PluginCalls;
  /** Where batched predicts go. */
  batches: Pick<PredictBatches, "submit">;
  plugins: DeclaredPlugins;
  /** Minimum time between two progress updates of one action. */
  progressIntervalMs: number;
}

/** What the plugin produced. */
export interface RunResult {
  /** The prediction (predict) or null. */
  value: Payload;
  /** The instance to store as the model's next revision, if the call produced one. */
  instance: Uint8Array | undefined;
  logTail: string[];
}

export class ActionRun {
  readonly #deps: RunDeps;
  readonly #report: RunReporter;
  /** How the child of the call that was running when the cancel came ended. */
  #stoppedChild: ChildExit | undefined;
  /** What every call of this run tells the plugin (ctx.info): its action and model, which attempt. */
  readonly #ids: { actionId: string; modelId: string; attempt: number };
  /** The checkpoint an earlier attempt stored, for the action's own call (ctx.info.checkpoint). */
  readonly #checkpoint: Value | undefined;
  /** Where its calls wait for a child: the action's priority (or a better one it inherits) and caller. */
  readonly #order: OrderOf | undefined;

  constructor(deps: RunDeps, report: RunReporter, ids: { actionId: string; modelId: string; attempt: number }, order?: OrderOf, checkpoint?: Value) {
    this.#deps = deps;
    this.#report = report;
    this.#ids = ids;
    this.#checkpoint = checkpoint;
    this.#order = order;
  }

  /** The exit of the child that a cancel stopped, for the cancel outcome. */
  get stoppedChild(): ChildExit | undefined {
    return this.#stoppedChild;
  }

  /**
   * Resolves the data access, then runs `call` on the model type's plugin: on `model`'s
   * revision, an instance it returns to be stored as `nextRevision`.
   */
  async execute(
    call: {
      kind: CallKind;
      modelType: string;
      model: ModelRef | undefined;
      nextRevision: bigint | undefined;
      jsonForm: JsonForm;
      batched?: Batched | undefined;
    },
    args: CallArgs,
    dataAccessCount: number,
    signal: AbortSignal,
  ): Promise<RunResult> {
    const resolved = await this.#resolveDataAccess(args, dataAccessCount, signal);
    if (dataAccessCount > 0) {
      const issues = resolvedProblems(this.#deps.plugins, call.modelType, call.kind, resolved);
      if (issues.length) {
        throw new ActionFailure({ code: "invalid_argument", message: `the data-access results do not match the schema: ${issues.join("; ")}` });
      }
    }
    const plugin = this.#deps.plugins.modelType(call.modelType);
    // Its plugin was reloaded without it while the action waited.
    if (!plugin) throw new ActionFailure({ code: "not_found", message: `model type ${call.modelType} is no longer declared by any loaded plugin` });
    const target = plugin.target;
    const progress = (state: JsonValuePb | undefined, logTail: string[]) => this.#report.progress(state, logTail);
    if (call.batched && call.model) {
      const { policy, hurry } = call.batched;
      const to = { target, modelType: call.modelType, model: call.model, policy };
      const item = await this.#reported(
        signal,
        (batch: BatchInfo) => this.#report.executing(batch),
        progress,
        (hooks) => this.#deps.batches.submit(to, { actionId: this.#ids.actionId, ...resolved, signal, hurry: hurry(), order: this.#order, ...hooks }),
      );
      return { value: payloadFromValue(item.value, call.jsonForm), instance: undefined, logTail: item.logTail };
    }
    const checkpoint = this.#checkpoint ? { checkpoint: this.#checkpoint } : {};
    const outcome = await this.#call(
      target,
      { kind: call.kind, target: call.modelType, ...this.#ids, ...checkpoint, model: call.model, nextRevision: call.nextRevision, ...resolved },
      signal,
      () => this.#report.executing(),
      progress,
      (value, encoded) => this.#report.checkpoint(value, encoded),
    );
    const { result } = outcome;
    return { value: payloadFromValue(result.value, call.jsonForm), instance: result.instance, logTail: outcome.logTail };
  }

  /** One plugin call, its progress published at a bounded rate; its checkpoints stored where `onCheckpoint` says (none without). */
  #call(
    target: PluginTarget,
    call: PluginCall,
    signal: AbortSignal,
    onStart: () => Promise<void>,
    onProgress: (state: JsonValuePb | undefined, logTail: string[]) => void,
    onCheckpoint?: (value: Value, encoded: Uint8Array) => Promise<void>,
  ): Promise<CallOutcome> {
    const checkpoints = onCheckpoint ? { onCheckpoint } : {};
    return this.#reported(signal, onStart, onProgress, (hooks) =>
      this.#deps.processes.call(target, call, { signal, order: this.#order, ...hooks, ...checkpoints }),
    );
  }

  /**
   * Runs `run` with hooks that report its start and its progress (published at a bounded
   * rate). A start the store could not keep fails the call at its end; one still waiting
   * to be stored is stored with the end (the store lingers over it: the end replaces it).
   */
  async #reported<T, S extends unknown[]>(
    signal: AbortSignal,
    onStart: (...info: S) => Promise<void>,
    onProgress: (state: JsonValuePb | undefined, logTail: string[]) => void,
    run: (hooks: { onStart(...info: S): void; onProgress(state: JsonValuePb | undefined, logTail: string[]): void }) => Promise<T>,
  ): Promise<T> {
    let latest: { state: JsonValuePb | undefined; logTail: string[] } | undefined;
    const publish = new Throttle(() => {
      if (latest) onProgress(latest.state, latest.logTail);
      latest = undefined;
    }, this.#deps.progressIntervalMs);
    // Reported once the call has its child.
    let unstored: { error: unknown } | undefined;
    let result: T;
    try {
      result = await run({
        onStart: (...info) => {
          onStart(...info).catch((error: unknown) => {
            unstored = { error };
          });
        },
        onProgress: (state, logTail) => {
          latest = { state, logTail };
          publish.request();
        },
      });
    } catch (error) {
      if (error instanceof ChildFailure && signal.aborted && error.exit) this.#stoppedChild ??= error.exit;
      throw error;
    } finally {
      publish.cancel();
      // The plugin's last report stands, even when it came within the interval.
      if (latest) onProgress(latest.state, latest.logTail);
    }
    // After the finally: a call that failed says why, not that its start was not stored.
    if (unstored) throw unstored.error;
    return result;
  }

  async #resolveDataAccess(args: CallArgs, count: number, signal: AbortSignal): Promise<ResolvedArgs> {
    if (count === 0) return resolveArgs(args, unreachable, signal);
    await this.#report.status(ActionStatus.ACCESSING_DATA);
    const resolved = await resolveArgs(args, (node, inner, callSignal) => this.#callDataAccess(node.path, node.name, inner, callSignal), signal);
    // Waiting for a child again, now for the main call.
    await this.#report.status(ActionStatus.QUEUED);
    return resolved;
  }

  async #callDataAccess(argument: string, name: string, args: ResolvedArgs, signal: AbortSignal): Promise<Payload> {
    const report = (patch: Partial<DataAccessProgress>) => this.#report.dataAccess(argument, patch);
    try {
      const outcome = await this.#call(
        this.#deps.plugins.dataAccess(name)!.target,
        { kind: CallKind.DATA_ACCESS, target: name, ...this.#ids, ...args },
        signal,
        () => report({ status: ActionStatus.EXECUTING, startTime: timestampNow() }),
        (state, logTail) => this.#report.progress(state, logTail, argument),
      );
      await report({ status: ActionStatus.SUCCEEDED, endTime: timestampNow(), logTail: outcome.logTail });
      // Passed on to the next call as it came: JSON stays text.
      return payloadFromValue(outcome.result.value, "json_text");
    } catch (error) {
      if (error instanceof ActionFailure) throw error; // the store failed: nothing more to report here
      // Stopped because the action was cancelled, or because a sibling failed.
      const stopped = signal.aborted && !(error instanceof ChildFailure && error.code !== "cancelled");
      const message = error instanceof Error ? error.message : String(error);
      const stack = error instanceof ChildFailure ? error.pluginStack : "";
      await report({
        status: stopped ? ActionStatus.CANCELLED : ActionStatus.FAILED,
        endTime: timestampNow(),
        error: create(ActionErrorSchema, { code: error instanceof ChildFailure ? error.code : "cancelled", message, stack }),
        logTail: error instanceof ChildFailure ? error.logTail : [],
      });
      if (stopped) throw error;
      throw new ActionFailure(
        { code: "data_access_failed", message: `data access "${name}" for ${argument} failed: ${message}`, stack },
        error instanceof ChildFailure ? error.logTail : [],
      );
    }
  }
}

function unreachable(): never {
  throw new Error("no data-access arguments to resolve");
}
