/**
 * Runs one plugin call on decoded values: shared by the worker and the test harness,
 * so that a plugin behaves the same in both.
 * @module
 */
import type { Context } from "./context.ts";
import { type Declared, isPredictionWithInstance, type ModelType, type Plugin } from "./plugin.ts";
import { checkKeywords, validated } from "./schema.ts";
import type { Args, Kwargs, PluginValue } from "./values.ts";

/** @internal */
export type CallKind = "data_access" | "instantiate" | "fit" | "predict";

/** How a model type turns its instances into bytes and back (JSON unless it declares its own). @internal */
export interface InstanceCodec {
  serialize(instance: unknown): Promise<Uint8Array>;
  deserialize(bytes: Uint8Array): Promise<unknown>;
}

/**
 * Gives a fit or predict its instance, once its arguments are checked: deserialized
 * from the bytes the call brought, or one the child keeps between calls (thread.ts).
 * @internal
 */
export type InstanceLoader = (codec: InstanceCodec) => Promise<unknown>;

/** The loader of an instance sent as bytes. @internal */
export function fromBytes(bytes: Uint8Array): InstanceLoader {
  return (codec) => codec.deserialize(bytes);
}

/** @internal */
export interface CallRequest {
  kind: CallKind;
  target: string;
  /** A fit's or predict's instance; none is the empty instance. */
  instance?: InstanceLoader;
  args: Args;
  kwargs: Kwargs;
}

/** @internal */
export interface CallOutput {
  value?: PluginValue;
  /** The new instance, serialized: of an instantiate or fit, or of a predict that returned withInstance. */
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

function codecOf(model: ModelType<unknown>): InstanceCodec {
  return { serialize: (instance) => serialize(model, instance), deserialize: (bytes) => deserialize(model, bytes) };
}

/** The instance a fit or predict runs on. */
function load(model: ModelType<unknown>, call: CallRequest): Promise<unknown> {
  return (call.instance ?? fromBytes(new Uint8Array()))(codecOf(model));
}

function modelType(plugin: Plugin, target: string): ModelType<unknown> {
  const model = plugin.models?.[target];
  if (!model) throw new TypeError(`plugin ${plugin.name} has no model type ${target}`);
  return model;
}

/** A call as `{ run, args?, kwargs? }`, whichever way the plugin wrote it. @internal */
export function declared<F extends (...a: never[]) => unknown>(
  fn: F | ({ run: F } & Declared<unknown, unknown>),
): { run: F } & Declared<unknown, unknown> {
  return typeof fn === "function" ? { run: fn } : fn;
}

/** The call's arguments as its schemas give them (validated, defaults applied). */
async function checked(fn: Declared<unknown, unknown>, call: CallRequest): Promise<[Args, Kwargs]> {
  checkKeywords(fn.kwargs, call.kwargs, call.kind === "data_access" ? call.target : `${call.kind} on ${call.target}`);
  return [(await validated(fn.args, call.args, "args")) as Args, (await validated(fn.kwargs, call.kwargs, "kwargs")) as Kwargs];
}

/** @internal */
export async function runCall(plugin: Plugin, call: CallRequest, ctx: Context): Promise<CallOutput> {
  switch (call.kind) {
    case "data_access": {
      const fn = plugin.dataAccess?.[call.target];
      if (!fn) throw new TypeError(`plugin ${plugin.name} has no data-access function ${call.target}`);
      const [args, kwargs] = await checked(fn, call);
      return { value: await fn.run(ctx, args, kwargs) };
    }
    case "instantiate": {
      const model = modelType(plugin, call.target);
      const fn = declared(model.instantiate);
      const [args, kwargs] = await checked(fn, call);
      const instance = await fn.run(ctx, args, kwargs);
      return { instance: await serialize(model, instance) };
    }
    case "fit": {
      const model = modelType(plugin, call.target);
      if (!model.fit) throw new TypeError(`model type ${call.target} has no fit`);
      const fn = declared(model.fit);
      const [args, kwargs] = await checked(fn, call);
      const instance = await load(model, call);
      const fitted = await fn.run(ctx, instance, args, kwargs);
      return { instance: await serialize(model, fitted) };
    }
    case "predict": {
      const model = modelType(plugin, call.target);
      if (!model.predict) throw new TypeError(`model type ${call.target} has no predict`);
      const fn = declared(model.predict);
      const [args, kwargs] = await checked(fn, call);
      const instance = await load(model, call);
      const out = await fn.run(ctx, instance, args, kwargs);
      if (isPredictionWithInstance(out)) {
        if ((fn as { concurrent?: boolean }).concurrent) {
          throw new TypeError(
            `predict of ${call.target} is declared concurrent, so it may not change its model: return the prediction alone, or drop concurrent: true`,
          );
        }
        return { value: out.prediction, instance: await serialize(model, out.instance) };
      }
      return { value: out };
    }
  }
}
