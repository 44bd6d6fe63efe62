/**
 * Unit-testing a plugin in-process, without a server or a child process. Calls go
 * through the same code as in a worker, serialization included, so a model that
 * does not survive serialize/deserialize fails here too, and so does a predict that
 * changes its instance in place (the engine keeps instances between calls).
 * @module
 */
import { type BatchCallItem, type CallKind, checkPlugin, fromBytes, type InstanceCodec, type InstanceLoader, runBatch, runCall } from "./_call.ts";
import { type Context, createContext, createLogger } from "./context.ts";
import type { Plugin } from "./plugin.ts";
import type { Args, JsonValue, Kwargs, PluginValue } from "./values.ts";

/** What one call reported and logged. */
export interface CallRecord {
  /** Every state passed to ctx.report, in order. */
  reports: JsonValue[];
  /** Every line written with ctx.log. */
  logs: string[];
  /** How many times the call said it was alive (ctx.heartbeat). */
  heartbeats: number;
  /** Every value passed to ctx.checkpoint(value), in order: the last is what a next attempt would get. */
  checkpoints: PluginValue[];
  /** A batch's items: what each reported (item.report) and logged (item.log), in the order given. */
  items?: { reports: JsonValue[]; logs: string[] }[];
}

/** One predict of a batch given to {@link PluginHarness.predictBatch}. */
export interface BatchInput {
  args?: Args;
  kwargs?: Kwargs;
  /** Aborts this item's signal, as a cancel of its action would. */
  signal?: AbortSignal;
}

/** What became of one predict of a batch: its prediction, or the error that failed it alone. */
export type BatchOutcome = { prediction: PluginValue } | { error: Error };

/** Options of every harness call. */
export interface CallOptions {
  /** Aborts ctx.signal, as a cancel would. */
  signal?: AbortSignal;
  /** ctx.info.attempt (1 unless given), as a retry would run the call. */
  attempt?: number;
  /** ctx.info.checkpoint: what an earlier attempt stored, for the call to resume from. */
  checkpoint?: PluginValue;
}

/** A stored model: the model type and the serialized instance. */
export interface TestModel {
  modelType: string;
  instance: Uint8Array;
}

/**
 * Drives a plugin the way the engine does. Create one with {@link testPlugin}.
 */
export interface PluginHarness {
  /** The records of every call so far, in order. */
  readonly calls: CallRecord[];
  dataAccess(name: string, args?: Args, kwargs?: Kwargs, options?: CallOptions): Promise<PluginValue>;
  instantiate(modelType: string, args?: Args, kwargs?: Kwargs, options?: CallOptions): Promise<TestModel>;
  fit(model: TestModel, args?: Args, kwargs?: Kwargs, options?: CallOptions): Promise<TestModel>;
  /**
   * The prediction, and the model, updated if predict returned withInstance. Throws if
   * predict changed its instance in place without returning withInstance: the engine
   * keeps a model's instance loaded between calls, so the next predict would see the change.
   */
  predict(model: TestModel, args?: Args, kwargs?: Kwargs, options?: CallOptions): Promise<{ prediction: PluginValue; model: TestModel }>;
  /**
   * Runs a batched predict on `items`, as the engine runs a batch: each item's outcome in
   * the order given (an item that fails its schema, or that run answers with an Error,
   * fails alone). Rejects as the engine fails the whole batch: a run that returns the
   * wrong number of results, or that changed its instance in place. `options.signal`
   * cancels the whole batch. (`predict` on a batched model type runs a batch of one.)
   */
  predictBatch(model: TestModel, items: BatchInput[], options?: CallOptions): Promise<BatchOutcome[]>;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A predict's instance, watched: predict runs on what `load` gives, and `check` then
 * throws if it changed in place. Serialized before (a copy: serialize may give a view of
 * the instance's own memory) and after: an engine that keeps it loaded between calls
 * would serve the next predict the changed one.
 */
function watched(model: TestModel): { load: InstanceLoader; check(): Promise<void> } {
  let loaded = undefined as { instance: unknown; bytes: Uint8Array; codec: InstanceCodec } | undefined;
  return {
    async load(codec) {
      const instance = await codec.deserialize(model.instance);
      loaded = { instance, bytes: new Uint8Array(await codec.serialize(instance)), codec };
      return instance;
    },
    async check() {
      if (loaded && !sameBytes(loaded.bytes, await loaded.codec.serialize(loaded.instance))) {
        throw new Error(
          `predict on ${model.modelType} changed its instance in place: the engine keeps instances between calls, ` +
            "so the next predict would see the change; copy it, or return withInstance(prediction, instance)",
        );
      }
    },
  };
}

/**
 * Wraps a plugin for in-process tests. Refuses, as the engine would at load, a plugin
 * that declares what cannot be served (a batch size out of range, say), naming the key.
 *
 * @example
 * ```ts
 * import plugin from "./mod.ts";
 * const h = testPlugin(plugin);
 * const model = await h.instantiate("demo.Echo", [1]);
 * const { prediction } = await h.predict(model, [2]);
 * const outcomes = await h.predictBatch(await h.instantiate("demo.Batched"), [{ args: [1] }, { args: [2] }]);
 * ```
 */
export function testPlugin(plugin: Plugin): PluginHarness {
  checkPlugin(plugin);
  const calls: CallRecord[] = [];
  const context = (kind: CallKind, target: string, options: CallOptions): { ctx: Context; record: CallRecord } => {
    const record: CallRecord = { reports: [], logs: [], heartbeats: 0, checkpoints: [] };
    calls.push(record);
    const checkpoint = options.checkpoint === undefined ? {} : { checkpoint: structuredClone(options.checkpoint) };
    const ctx: Context = createContext(
      {
        callId: String(calls.length),
        info: { actionId: `test-${calls.length}`, modelId: "", target, call: kind, attempt: options.attempt ?? 1, ...checkpoint },
        signal: options.signal ?? new AbortController().signal,
        log: createLogger((line) => record.logs.push(line)),
        report: (state) => record.reports.push(structuredClone(state)),
        heartbeat: () => void record.heartbeats++,
      },
      async (value) => void record.checkpoints.push(structuredClone(value)),
    );
    return { ctx, record };
  };
  const call = (kind: CallKind, target: string, instance: InstanceLoader | undefined, args: Args, kwargs: Kwargs, options: CallOptions) => {
    const { ctx } = context(kind, target, options);
    return runCall(plugin, instance ? { kind, target, instance, args, kwargs } : { kind, target, args, kwargs }, ctx);
  };
  return {
    calls,
    async dataAccess(name, args = [], kwargs = {}, options = {}) {
      return (await call("data_access", name, undefined, args, kwargs, options)).value ?? null;
    },
    async instantiate(modelType, args = [], kwargs = {}, options = {}) {
      const out = await call("instantiate", modelType, undefined, args, kwargs, options);
      return { modelType, instance: out.instance! };
    },
    async fit(model, args = [], kwargs = {}, options = {}) {
      const out = await call("fit", model.modelType, fromBytes(model.instance), args, kwargs, options);
      return { modelType: model.modelType, instance: out.instance! };
    },
    async predict(model, args = [], kwargs = {}, options = {}) {
      const instance = watched(model);
      const out = await call("predict", model.modelType, instance.load, args, kwargs, options);
      if (!out.instance) await instance.check();
      return {
        prediction: out.value ?? null,
        model: out.instance ? { modelType: model.modelType, instance: out.instance } : model,
      };
    },
    async predictBatch(model, inputs, options = {}) {
      const { ctx, record } = context("predict", model.modelType, options);
      record.items = inputs.map(() => ({ reports: [], logs: [] }));
      const items = inputs.map((input, i): BatchCallItem => {
        const itemRecord = record.items![i]!;
        const signals = input.signal ? [ctx.signal, input.signal] : [ctx.signal];
        return {
          id: String(i),
          actionId: `${ctx.info.actionId}.${i}`,
          args: input.args ?? [],
          kwargs: input.kwargs ?? {},
          signal: AbortSignal.any(signals),
          report: (state) => itemRecord.reports.push(structuredClone(state)),
          log: createLogger((line) => itemRecord.logs.push(line)),
        };
      });
      const instance = watched(model);
      const answers = await runBatch(plugin, { target: model.modelType, instance: instance.load, items }, ctx);
      await instance.check();
      const byId = new Map(answers.map((answer) => [answer.id, answer]));
      return items.map(({ id }): BatchOutcome => {
        const answer = byId.get(id)!;
        if (!("error" in answer)) return { prediction: answer.value };
        return { error: answer.error instanceof Error ? answer.error : new Error(String(answer.error)) };
      });
    },
  };
}
