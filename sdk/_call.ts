/**
 * Runs one plugin call on decoded values: shared by the worker and the test harness,
 * so that a plugin behaves the same in both.
 * @module
 */
import type { Context, Logger } from "./context.ts";
import { PluginError } from "./errors.ts";
import { type BatchItem, type BatchOptions, type Declared, isPredictionWithInstance, type ModelType, type Plugin } from "./plugin.ts";
import { checkKeywords, validated } from "./schema.ts";
import type { Args, JsonValue, Kwargs, PluginValue } from "./values.ts";

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
function load(model: ModelType<unknown>, instance: InstanceLoader | undefined): Promise<unknown> {
  return (instance ?? fromBytes(new Uint8Array()))(codecOf(model));
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

/** Arguments as the schemas of `fn` (named `name` in messages) give them: validated, defaults applied. */
async function checkedArguments(fn: Declared<unknown, unknown>, name: string, args: Args, kwargs: Kwargs): Promise<[Args, Kwargs]> {
  checkKeywords(fn.kwargs, kwargs, name);
  return [(await validated(fn.args, args, "args")) as Args, (await validated(fn.kwargs, kwargs, "kwargs")) as Kwargs];
}

/** The call's arguments as its schemas give them. */
function checked(fn: Declared<unknown, unknown>, call: CallRequest): Promise<[Args, Kwargs]> {
  return checkedArguments(fn, call.kind === "data_access" ? call.target : `${call.kind} on ${call.target}`, call.args, call.kwargs);
}

/** Whether a model type's predict is batched. @internal */
export function isBatched(predict: ModelType<unknown>["predict"]): predict is Extract<ModelType<unknown>["predict"], { batch: BatchOptions }> {
  return typeof predict === "object" && predict !== null && predict.batch !== undefined;
}

/** A value as a load refusal shows it. */
function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

/** The largest batch and the longest wait (an hour) the server takes (server/engine/load-plugins.ts). */
const MAX_BATCH_SIZE = 65_536;
const MAX_BATCH_WAIT_MS = 3_600_000;

/**
 * Refuses what a plugin declares that the engine cannot serve, naming the key: a batch
 * on anything but predict, a batch size or wait out of range, a batched predict declared
 * not concurrent. The worker refuses to load such a plugin; so does testPlugin.
 * @internal
 */
export function checkPlugin(plugin: Plugin): void {
  for (const [name, model] of Object.entries(plugin.models ?? {})) {
    const key = `models[${JSON.stringify(name)}]`;
    for (const call of ["instantiate", "fit"] as const) {
      const fn = model[call] as { batch?: unknown } | undefined;
      if (typeof fn === "object" && fn !== null && fn.batch !== undefined) {
        throw new TypeError(`${key}.${call}.batch: only predict can be batched; remove batch from ${call}`);
      }
    }
    const predict = model.predict;
    if (!isBatched(predict)) continue;
    const batch = predict.batch as unknown;
    if (typeof batch !== "object" || batch === null) {
      throw new TypeError(`${key}.predict.batch must be an object { maxSize, maxWaitMs } (got ${shown(batch)})`);
    }
    const { maxSize, maxWaitMs } = batch as { maxSize?: unknown; maxWaitMs?: unknown };
    if (typeof maxSize !== "number" || !Number.isInteger(maxSize) || maxSize < 1) {
      throw new TypeError(`${key}.predict.batch.maxSize must be an integer of at least 1 (got ${shown(maxSize)})`);
    }
    if (maxSize > MAX_BATCH_SIZE) {
      throw new TypeError(`${key}.predict.batch.maxSize must be at most ${MAX_BATCH_SIZE} (got ${shown(maxSize)})`);
    }
    if (typeof maxWaitMs !== "number" || !Number.isFinite(maxWaitMs) || maxWaitMs < 0) {
      throw new TypeError(`${key}.predict.batch.maxWaitMs must be a finite number of at least 0 (got ${shown(maxWaitMs)})`);
    }
    if (maxWaitMs > MAX_BATCH_WAIT_MS) {
      throw new TypeError(`${key}.predict.batch.maxWaitMs must be at most ${MAX_BATCH_WAIT_MS} (an hour) (got ${shown(maxWaitMs)})`);
    }
    const concurrent = (predict as { concurrent?: unknown }).concurrent;
    if (concurrent !== undefined && concurrent !== true) {
      throw new TypeError(
        `${key}.predict.concurrent must be true or left out when predict.batch is set: a batched predict only reads its model (got ${shown(concurrent)})`,
      );
    }
  }
}

/** One predict of a batch call, as the worker or the harness makes it. @internal */
export interface BatchCallItem {
  /** Unique within the call: what its answer is keyed by. */
  id: string;
  actionId: string;
  args: Args;
  kwargs: Kwargs;
  signal: AbortSignal;
  report(state: JsonValue): void;
  log: Logger;
}

/** What became of one predict of a batch: its value, or its error. @internal */
export type ItemAnswer = { id: string; value: PluginValue } | { id: string; error: unknown };

/** @internal */
export interface BatchRequest {
  target: string;
  /** The instance the batch runs on; none is the empty instance. */
  instance?: InstanceLoader;
  items: BatchCallItem[];
}

/** Whether `value` is an Error, from this realm or another. */
function isError(value: unknown): value is Error {
  return value instanceof Error || PluginError.is(value) || Object.prototype.toString.call(value) === "[object Error]";
}

/** "an object", "a number", "null": what a batched predict returned in place of an array. */
function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? "an" : "a"} ${type}`;
}

const plural = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/**
 * Runs a batched predict: each item's arguments checked on their own (an item that
 * fails its schema fails alone and is not passed to run), then `run` once on the items
 * left, on one instance. Answers every item sent, in no particular order. A run that
 * throws fails every item it was given with that error; one that returns anything but
 * an array of one answer per item fails the whole call (this throws).
 * @internal
 */
export async function runBatch(plugin: Plugin, call: BatchRequest, ctx: Context): Promise<ItemAnswer[]> {
  const model = modelType(plugin, call.target);
  const fn = model.predict;
  if (!isBatched(fn)) throw new TypeError(`predict of ${call.target} is not batched: its predicts go one per call`);
  const answers: ItemAnswer[] = [];
  const ready: { id: string; item: BatchItem }[] = [];
  for (const item of call.items) {
    try {
      const [args, kwargs] = await checkedArguments(fn, `predict on ${call.target}`, item.args, item.kwargs);
      const { signal, report, log, actionId } = item;
      ready.push({ id: item.id, item: { args, kwargs, signal, report, log, info: { actionId } } });
    } catch (error) {
      answers.push({ id: item.id, error });
    }
  }
  if (ready.length === 0) return answers;
  const instance = await load(model, call.instance);
  let results: unknown;
  try {
    results = await fn.run(
      ctx,
      instance,
      ready.map((r) => r.item),
    );
  } catch (error) {
    return [...answers, ...ready.map(({ id }) => ({ id, error }))];
  }
  const n = ready.length;
  if (!Array.isArray(results)) {
    throw new TypeError(`predict of ${call.target} returned ${kindOf(results)} instead of an array of ${plural(n, "result")}`);
  }
  if (results.length !== n) throw new TypeError(`predict of ${call.target} returned ${plural(results.length, "result")} for ${plural(n, "item")}`);
  ready.forEach(({ id }, i) => {
    const result: unknown = results[i];
    if (isError(result)) answers.push({ id, error: result });
    else if (isPredictionWithInstance(result)) {
      const message = `predict of ${call.target} is batched, so it may not change its model: return the prediction alone, or drop batch`;
      answers.push({ id, error: new TypeError(message) });
    } else answers.push({ id, value: result as PluginValue });
  });
  return answers;
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
      const instance = await load(model, call.instance);
      const fitted = await fn.run(ctx, instance, args, kwargs);
      return { instance: await serialize(model, fitted) };
    }
    case "predict": {
      const model = modelType(plugin, call.target);
      const predict = model.predict;
      if (!predict) throw new TypeError(`model type ${call.target} has no predict`);
      if (isBatched(predict)) return await predictOne(plugin, call, ctx);
      const fn = declared(predict);
      const [args, kwargs] = await checked(fn, call);
      const instance = await load(model, call.instance);
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

/** A single predict of a batched model type: a batch of one, its error thrown. */
async function predictOne(plugin: Plugin, call: CallRequest, ctx: Context): Promise<CallOutput> {
  const item: BatchCallItem = {
    id: "0",
    actionId: ctx.info.actionId,
    args: call.args,
    kwargs: call.kwargs,
    signal: ctx.signal,
    report: (state) => ctx.report(state),
    log: ctx.log,
  };
  const batch = { target: call.target, items: [item], ...(call.instance ? { instance: call.instance } : {}) };
  const [answer] = await runBatch(plugin, batch, ctx);
  if (!answer || "error" in answer) throw answer?.error;
  return { value: answer.value };
}
