/**
 * Unit-testing a plugin in-process, without a server or a child process. Calls go
 * through the same code as in a worker, serialization included, so a model that
 * does not survive serialize/deserialize fails here too, and so does a predict that
 * changes its instance in place (the engine keeps instances between calls).
 * @module
 */
import { type CallKind, fromBytes, type InstanceCodec, type InstanceLoader, runCall } from "./_call.ts";
import { type Context, createContext, createLogger } from "./context.ts";
import type { Plugin } from "./plugin.ts";
import type { Args, JsonValue, Kwargs, PluginValue } from "./values.ts";

/** What one call reported and logged. */
export interface CallRecord {
  /** Every state passed to ctx.report, in order. */
  reports: JsonValue[];
  /** Every line written with ctx.log. */
  logs: string[];
}

/** Options of every harness call. */
export interface CallOptions {
  /** Aborts ctx.signal, as a cancel would. */
  signal?: AbortSignal;
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
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Wraps a plugin for in-process tests.
 *
 * @example
 * ```ts
 * import plugin from "./mod.ts";
 * const h = testPlugin(plugin);
 * const model = await h.instantiate("demo.Echo", [1]);
 * const { prediction } = await h.predict(model, [2]);
 * ```
 */
export function testPlugin(plugin: Plugin): PluginHarness {
  const calls: CallRecord[] = [];
  const call = (kind: CallKind, target: string, instance: InstanceLoader | undefined, args: Args, kwargs: Kwargs, options: CallOptions) => {
    const record: CallRecord = { reports: [], logs: [] };
    calls.push(record);
    const ctx: Context = createContext({
      callId: String(calls.length),
      info: { actionId: `test-${calls.length}`, modelId: "", target, call: kind, attempt: 1 },
      signal: options.signal ?? new AbortController().signal,
      log: createLogger((line) => record.logs.push(line)),
      report: (state) => record.reports.push(structuredClone(state)),
    });
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
      // The instance as predict got it, serialized before (a copy: serialize may give a view
      // of the instance's own memory) and after: an engine that keeps it loaded between
      // calls would serve the next predict the changed one.
      let loaded = undefined as { instance: unknown; bytes: Uint8Array; codec: InstanceCodec } | undefined;
      const load: InstanceLoader = async (codec) => {
        const instance = await codec.deserialize(model.instance);
        loaded = { instance, bytes: new Uint8Array(await codec.serialize(instance)), codec };
        return instance;
      };
      const out = await call("predict", model.modelType, load, args, kwargs, options);
      if (loaded && !out.instance && !sameBytes(loaded.bytes, await loaded.codec.serialize(loaded.instance))) {
        throw new Error(
          `predict on ${model.modelType} changed its instance in place: the engine keeps instances between calls, ` +
            "so the next predict would see the change; copy it, or return withInstance(prediction, instance)",
        );
      }
      return {
        prediction: out.value ?? null,
        model: out.instance ? { modelType: model.modelType, instance: out.instance } : model,
      };
    },
  };
}
