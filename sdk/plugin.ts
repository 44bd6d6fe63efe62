/**
 * Declaring plugins: model types and data-access functions.
 * @module
 */
import type { Context } from "./context.ts";
import type { Args, Kwargs, PluginValue } from "./values.ts";

type MaybePromise<T> = T | Promise<T>;

/**
 * A model type: how to create, fit and predict with an instance, and how to turn it
 * into bytes and back. Without serialize/deserialize, the instance is stored as JSON.
 *
 * @example
 * ```ts
 * const counter: ModelType<{ n: number }> = {
 *   description: "counts the rows it was fitted on",
 *   instantiate: () => ({ n: 0 }),
 *   fit: (_ctx, model, [rows]) => ({ n: model.n + (rows as unknown[]).length }),
 *   predict: (_ctx, model) => model.n,
 * };
 * ```
 */
export interface ModelType<Instance = unknown> {
  description?: string;
  /** Creates a new instance from the CreateInstance arguments. */
  instantiate(ctx: Context, args: Args, kwargs: Kwargs): MaybePromise<Instance>;
  /** Fits the instance and returns it (the same object, changed, or a new one). */
  fit?(ctx: Context, instance: Instance, args: Args, kwargs: Kwargs): MaybePromise<Instance>;
  /**
   * Predicts. Return the prediction, or {@link withInstance} to also store an
   * updated instance.
   */
  predict?(ctx: Context, instance: Instance, args: Args, kwargs: Kwargs): MaybePromise<PluginValue | PredictionWithInstance<Instance>>;
  /** Turns an instance into bytes; JSON by default. */
  serialize?(instance: Instance): MaybePromise<Uint8Array>;
  /** Turns bytes from serialize back into an instance; JSON by default. */
  deserialize?(bytes: Uint8Array): MaybePromise<Instance>;
}

/**
 * A data-access function: fetches the data that the engine passes in place of a
 * DataAccess argument.
 *
 * @example
 * ```ts
 * const range: DataAccessFunction = {
 *   description: "the integers [0, n)",
 *   run: (_ctx, [n]) => Array.from({ length: Number(n) }, (_, i) => i),
 * };
 * ```
 */
export interface DataAccessFunction {
  description?: string;
  run(ctx: Context, args: Args, kwargs: Kwargs): MaybePromise<PluginValue>;
}

/** A plugin module's default export. */
export interface Plugin {
  /** Unique among the server's plugins. */
  name: string;
  description?: string;
  /** Model types by their full name, e.g. "iris.RandomForest". */
  // biome-ignore lint/suspicious/noExplicitAny: each model type has its own instance type; unknown would reject them (parameters are contravariant)
  models?: Record<string, ModelType<any>>;
  /** Data-access functions by their full name, e.g. "iris.inputs". */
  dataAccess?: Record<string, DataAccessFunction>;
}

/**
 * Declares a plugin; use it as the module's default export.
 *
 * @example
 * ```ts
 * export default definePlugin({
 *   name: "demo",
 *   dataAccess: { "demo.one": { run: () => 1 } },
 * });
 * ```
 */
export function definePlugin(plugin: Plugin): Plugin {
  if (!plugin.name) throw new TypeError("definePlugin: name is required");
  return plugin;
}

/**
 * Declares a model type with its instance type inferred from instantiate.
 *
 * @example
 * ```ts
 * const echo = defineModel({
 *   instantiate: (_ctx, args) => ({ args }),
 *   predict: (_ctx, _model, args) => args,
 * });
 * ```
 */
export function defineModel<Instance>(model: ModelType<Instance>): ModelType<Instance> {
  return model;
}

const predictionMark = Symbol.for("plinth.sdk.PredictionWithInstance");

/** A prediction together with an updated instance to store. */
export interface PredictionWithInstance<Instance> {
  readonly [predictionMark]: true;
  readonly prediction: PluginValue;
  readonly instance: Instance;
}

/**
 * Returned from predict to also store an updated instance as the model's next revision.
 *
 * @example
 * ```ts
 * predict: (_ctx, model, args) => withInstance(args[0] ?? null, { ...model, calls: model.calls + 1 })
 * ```
 */
export function withInstance<Instance>(prediction: PluginValue, instance: Instance): PredictionWithInstance<Instance> {
  return { [predictionMark]: true, prediction, instance };
}

/** @internal */
export function isPredictionWithInstance(value: unknown): value is PredictionWithInstance<unknown> {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[predictionMark] === true;
}
