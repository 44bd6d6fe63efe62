/**
 * Plugins without children, for the fast tests: a real PluginRegistry of declared names,
 * and plugin calls that the test answers, fails or leaves hanging by hand.
 */
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { RetryPolicy } from "../../gen/plinth/v1/action_pb.ts";
import { PluginSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { CallKind, ResultSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import type { PluginCalls } from "../../server/engine/action-run.ts";
import { PluginRegistry } from "../../server/engine/plugins.ts";
import { type ChildExit, ChildFailure } from "../../server/process/child.ts";
import type { BatchItem, CallOptions, CallOutcome, PluginCall } from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { workerJson } from "./fake-child.ts";

/** A registry declaring these model types and data-access functions, each in a plugin module of its own. */
export function pluginRegistry(
  modelTypes: string[],
  dataAccess: string[] = [],
  /** Model types whose predict is concurrent, with their max_replicas. */
  concurrent: Record<string, number> = {},
  /** Model types of those whose predicts are batched, with their batch size and wait. */
  batched: Record<string, { maxSize: number; maxWaitMs: number }> = {},
  /** Model types with a configured retry policy (plugins[].retry), for every call. */
  retry: Record<string, RetryPolicy> = {},
): PluginRegistry {
  const loaded = (name: string, kind: "modelTypes" | "dataAccess", i: number) => {
    const batch = batched[name] ? { batchMaxSize: batched[name].maxSize, batchMaxWaitMs: batched[name].maxWaitMs } : {};
    const serving = concurrent[name] === undefined ? {} : { serving: { concurrent: true, maxReplicas: concurrent[name], ...batch } };
    return {
      key: `plugins[${i}]`,
      target: { module: `/fake/${name}.ts`, runtime: "node" as const, label: name },
      ...(retry[name] ? { retry: { [CallKind.INSTANTIATE]: retry[name], [CallKind.FIT]: retry[name], [CallKind.PREDICT]: retry[name] } } : {}),
      info: create(PluginSchema, { name, module: `/fake/${name}.ts`, runtime: "node", [kind]: [{ name, ...serving }] }),
    };
  };
  return new PluginRegistry([
    ...modelTypes.map((name, i) => loaded(name, "modelTypes", i)),
    ...dataAccess.map((name, i) => loaded(name, "dataAccess", modelTypes.length + i)),
  ]);
}

/** One plugin call as the fake received it, for the test to settle. */
export interface PendingCall {
  readonly target: PluginTarget;
  readonly call: PluginCall;
  /** The action the call belongs to, and its model. */
  readonly actionId: string;
  readonly modelId: string;
  /** When it arrived, across every FakePluginCalls of the process: to order the calls of several servers. */
  readonly arrival: number;
  readonly signal: AbortSignal | undefined;
  /** Where the call would wait for a child: its action's priority and caller. */
  readonly order: CallOptions["order"];
  readonly settled: boolean;
  /** A batch call's items, taken as it arrived (the fake's child is ready at once). */
  readonly items: BatchItem[] | undefined;
  /** The plugin answers: `value` (JSON) as its result, and `instance` after instantiate or fit. */
  finish(answer?: { value?: JsonValue; instance?: Uint8Array }): void;
  /** The plugin fails (a plugin error unless given another). */
  fail(error?: unknown): void;
  /** The plugin reports its progress (ctx.report), as its child's frame would bring it. */
  report(state: JsonValue): void;
}

let arrivals = 0;

/** How a child that a cancel stopped ends. */
export const STOPPED: ChildExit = {
  code: null,
  signal: "SIGTERM",
  terminated: true,
  forced: false,
  vanished: false,
  protocolError: false,
  durationMs: 1,
  stopMs: 1,
};

/** A forget as the fake received it: the model's revisions but `keep` (all without it). */
export interface Forgotten {
  readonly modelId: string;
  readonly keep: bigint | undefined;
  /** When it arrived, on the same count as the calls'. */
  readonly arrival: number;
}

export class FakePluginCalls implements PluginCalls {
  /** Every call received, in arrival order. */
  readonly calls: PendingCall[] = [];
  /** Every forget received, in arrival order. */
  readonly forgotten: Forgotten[] = [];
  /**
   * A call whose signal aborts fails at once as cancelled, as the process manager's does
   * once its child is gone; false: it hangs until the test settles it.
   */
  stopOnAbort = true;

  /** The actions whose calls arrived, in order. */
  get actionIds(): string[] {
    return this.calls.map((c) => c.actionId);
  }

  /** The calls not settled yet. */
  get pending(): PendingCall[] {
    return this.calls.filter((c) => !c.settled);
  }

  /** The call of this action (its latest). */
  of(actionId: string): PendingCall {
    const found = this.calls.findLast((c) => c.actionId === actionId);
    if (!found) throw new Error(`no plugin call of action ${actionId} arrived; calls: ${this.actionIds.join(", ") || "none"}`);
    return found;
  }

  forget(modelId: string, keep?: bigint): void {
    this.forgotten.push({ modelId, keep, arrival: ++arrivals });
  }

  /** The models the test says its children hold (none unless it says so). */
  readonly holding = new Set<string>();

  held(): Set<string> {
    return new Set(this.holding);
  }

  call(target: PluginTarget, call: PluginCall, options: CallOptions = {}): Promise<CallOutcome> {
    const { signal } = options;
    // As the manager: a call cancelled before it got a child never reaches one.
    signal?.throwIfAborted();
    return new Promise<CallOutcome>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        fn();
      };
      const onAbort = () => {
        if (this.stopOnAbort) pending.fail(new ChildFailure("cancelled", "the action was cancelled", "", undefined, { exit: STOPPED }));
      };
      const items = call.batch ? [...call.batch()] : undefined;
      const pending: PendingCall = {
        target,
        call,
        items,
        // What the plugin sees as ctx.info.
        actionId: (call as PluginCall & { actionId?: string }).actionId ?? "",
        modelId: (call as PluginCall & { modelId?: string }).modelId ?? "",
        signal,
        order: options.order,
        arrival: ++arrivals,
        get settled() {
          return settled;
        },
        finish: (answer = {}) =>
          settle(() => {
            const value = answer.value === undefined ? undefined : workerJson(answer.value);
            const result = create(ResultSchema, { ...(value ? { value } : {}), ...(answer.instance ? { instance: answer.instance } : {}) });
            // A batch: every item gets the value.
            const outcomes = items && new Map(items.map((item) => [item.itemId, { value }]));
            resolve({ result, logTail: [], warm: false, ...(outcomes ? { items: outcomes } : {}) });
          }),
        fail: (error = new ChildFailure("plugin_error", "Error: the plugin failed")) => settle(() => reject(error)),
        report: (state) => options.onProgress?.(fromJson(ValueSchema, state), [], ""),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.calls.push(pending);
      // The call has a child at once: the fake has as many as asked for.
      options.onStart?.(1000 + this.calls.length);
    });
  }
}
