/**
 * Runs one plugin call on decoded values: shared by the worker and the test harness,
 * so that a plugin behaves the same in both.
 * @module
 */
import type { Context } from "./context.ts";
import { isPredictionWithInstance, type ModelType, type Plugin } from "./plugin.ts";
import type { Args, Kwargs, PluginValue } from "./values.ts";

/** @internal */
export type CallKind = "data_access" | "instantiate" | "fit" | "predict";

/** @internal */
export interface CallRequest {
  kind: CallKind;
  target: string;
  instance?: Uint8Array;
  args: Args;
  kwargs: Kwargs;
}

/** @internal */
export interface CallOutput {
  value?: PluginValue;
  instance?: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function serialize(model: ModelType<unknown>, instance: unknown): Promise<Uint8Array> {
  if (model.serialize) return await model.serialize(instance);
  const json = JSON.stringify(instance);
  if (json === undefined) throw new TypeError("instance is not JSON-serializable; declare serialize and deserialize");
  return encoder.encode(json);
}

async function deserialize(model: ModelType<unknown>, bytes: Uint8Array): Promise<unknown> {
  if (model.deserialize) return await model.deserialize(bytes);
  return JSON.parse(decoder.decode(bytes));
}

function modelType(plugin: Plugin, target: string): ModelType<unknown> {
  const model = plugin.models?.[target];
  if (!model) throw new TypeError(`plugin ${plugin.name} has no model type ${target}`);
  return model;
}

/** @internal */
export async function runCall(plugin: Plugin, call: CallRequest, ctx: Context): Promise<CallOutput> {
  switch (call.kind) {
    case "data_access": {
      const fn = plugin.dataAccess?.[call.target];
      if (!fn) throw new TypeError(`plugin ${plugin.name} has no data-access function ${call.target}`);
      return { value: await fn.run(ctx, call.args, call.kwargs) };
    }
    case "instantiate": {
      const model = modelType(plugin, call.target);
      const instance = await model.instantiate(ctx, call.args, call.kwargs);
      return { instance: await serialize(model, instance) };
    }
    case "fit": {
      const model = modelType(plugin, call.target);
      if (!model.fit) throw new TypeError(`model type ${call.target} has no fit`);
      const instance = await deserialize(model, call.instance ?? new Uint8Array());
      const fitted = await model.fit(ctx, instance, call.args, call.kwargs);
      return { instance: await serialize(model, fitted) };
    }
    case "predict": {
      const model = modelType(plugin, call.target);
      if (!model.predict) throw new TypeError(`model type ${call.target} has no predict`);
      const instance = await deserialize(model, call.instance ?? new Uint8Array());
      const out = await model.predict(ctx, instance, call.args, call.kwargs);
      if (isPredictionWithInstance(out)) {
        return { value: out.prediction, instance: await serialize(model, out.instance) };
      }
      return { value: out };
    }
  }
}
