/**
 * Declaring plugins: model types and data-access functions.
 * @module
 */
import type { Context, Logger } from "./context.ts";
import type { Infer, Schema } from "./schema.ts";
import type { Args, JsonValue, Kwargs, PluginValue } from "./values.ts";

type MaybePromise<T> = T | Promise<T>;

/**
 * What a function may declare about its calls: schemas of its positional arguments (an
 * array), keyword arguments (an object) and progress reports. The server checks requests
 * against them before anything runs, and ListPlugins shows them to every client.
 */
export interface Declared<A, K> {
  description?: string;
  args?: Schema<A>;
  kwargs?: Schema<K>;
  state?: Schema;
}

/** instantiate with schemas: `run` gets the arguments as the schemas give them. */
export interface Instantiate<Instance, A = Args, K = Kwargs> extends Declared<A, K> {
  run(ctx: Context, args: A, kwargs: K): MaybePromise<Instance>;
}

/** fit with schemas. */
export interface Fit<Instance, A = Args, K = Kwargs> extends Declared<A, K> {
  run(ctx: Context, instance: Instance, args: A, kwargs: K): MaybePromise<Instance>;
}

/** predict with schemas. */
export interface Predict<Instance, A = Args, K = Kwargs> extends Declared<A, K> {
  /**
   * Predict leaves the instance as it is (reads it, never changes it, never returns
   * withInstance): the engine may then run predicts on one model at once in several
   * children (up to plugins[].max_replicas). Undeclared, a model's calls run one at a time.
   */
  concurrent?: boolean;
  /** Only a {@link PredictBatch} has a batch. */
  batch?: undefined;
  run(ctx: Context, instance: Instance, args: A, kwargs: K): MaybePromise<PluginValue | PredictionWithInstance<Instance>>;
}

/** How the engine groups a batched predict's calls. */
export interface BatchOptions {
  /** The most predicts in one batch: an integer from 1 to 65536. */
  maxSize: number;
  /**
   * How long a batch waits for more predicts once one is waiting, in milliseconds
   * (from 0 to 3600000, an hour); a full batch goes at once.
   */
  maxWaitMs: number;
}

/**
 * One predict of a batch, as a batched predict's `run` gets it: each is an action of its
 * own, with its own arguments (checked against the declared schemas on their own), its
 * own cancel, progress and result.
 */
export interface BatchItem<A = Args, K = Kwargs, S = JsonValue> {
  readonly args: A;
  readonly kwargs: K;
  /** Aborted when this predict is cancelled, or the whole batch is (then ctx.signal is too). */
  readonly signal: AbortSignal;
  /** Publishes this predict's progress as its action's state; cheap to call often, as ctx.report. */
  report(state: S): void;
  /** Writes to the log tail, each line marked with this predict's action. */
  readonly log: Logger;
  readonly info: {
    /** The action this predict is. */
    readonly actionId: string;
  };
}

/**
 * A batched predict: the engine groups predicts waiting on one model (and revision) into
 * one call of at most `batch.maxSize`, waiting at most `batch.maxWaitMs` for more once
 * one waits. `run` answers each item, in order: a value, or an Error that fails that
 * item alone (a PluginError keeps its code); a throw fails every item. A batched predict
 * only reads its instance (it is concurrent): it may not return withInstance.
 *
 * @example
 * ```ts
 * const predict: PredictBatch<Model> = {
 *   batch: { maxSize: 32, maxWaitMs: 5 },
 *   run: (_ctx, model, items) =>
 *     items.map((item) => (Array.isArray(item.args[0]) ? score(model, item.args[0]) : new PluginError("bad_input", "args[0]: expected rows"))),
 * };
 * ```
 */
export interface PredictBatch<Instance, A = Args, K = Kwargs, S = JsonValue> extends Declared<A, K> {
  batch: BatchOptions;
  /** Always so for a batched predict: true, or left out. */
  concurrent?: true;
  run(ctx: Context<S>, instance: Instance, items: BatchItem<A, K, S>[]): MaybePromise<readonly (PluginValue | Error)[]>;
}

/**
 * A model type: how to create, fit and predict with an instance, and how to turn it
 * into bytes and back. Without serialize/deserialize, the instance is stored as JSON.
 * Each of instantiate, fit and predict is a function, or `{ args, kwargs, state, run }`
 * to declare schemas (see {@link defineModel}).
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
  // biome-ignore lint/suspicious/noExplicitAny: each declared call types its own arguments
  instantiate: ((ctx: Context, args: Args, kwargs: Kwargs) => MaybePromise<Instance>) | Instantiate<Instance, any, any>;
  /** Fits the instance and returns it (the same object, changed, or a new one). */
  // biome-ignore lint/suspicious/noExplicitAny: each declared call types its own arguments
  fit?: ((ctx: Context, instance: Instance, args: Args, kwargs: Kwargs) => MaybePromise<Instance>) | Fit<Instance, any, any>;
  /**
   * Predicts. Return the prediction, or {@link withInstance} to also store an
   * updated instance; or, batched ({@link PredictBatch}), answer a batch of predicts at once.
   */
  predict?:
    | ((ctx: Context, instance: Instance, args: Args, kwargs: Kwargs) => MaybePromise<PluginValue | PredictionWithInstance<Instance>>)
    // biome-ignore lint/suspicious/noExplicitAny: each declared call types its own arguments
    | Predict<Instance, any, any>
    // biome-ignore lint/suspicious/noExplicitAny: each declared call types its own arguments
    | PredictBatch<Instance, any, any, any>;
  /** Turns an instance into bytes; JSON by default. */
  serialize?(instance: Instance): MaybePromise<Uint8Array>;
  /** Turns bytes from serialize back into an instance; JSON by default. */
  deserialize?(bytes: Uint8Array): MaybePromise<Instance>;
}

/**
 * A data-access function: fetches the data that the engine passes in place of a
 * DataAccess argument. `args`, `kwargs` and `state` declare schemas, as for models.
 *
 * @example
 * ```ts
 * const range: DataAccessFunction = {
 *   description: "the integers [0, n)",
 *   run: (_ctx, [n]) => Array.from({ length: Number(n) }, (_, i) => i),
 * };
 * ```
 */
export interface DataAccessFunction<A = Args, K = Kwargs> extends Declared<A, K> {
  run(ctx: Context, args: A, kwargs: K): MaybePromise<PluginValue>;
}

/**
 * A data-access function whose `run` gets its arguments typed by its schemas.
 *
 * @example
 * ```ts
 * const range = defineDataAccess({
 *   args: z.tuple([z.number().int().min(0)]),
 *   run: (_ctx, [n]) => Array.from({ length: n }, (_, i) => i), // n: number
 * });
 * ```
 */
export function defineDataAccess<AS = undefined, KS = undefined, SS = undefined>(fn: {
  description?: string;
  args?: AS & Schema;
  kwargs?: KS & Schema;
  state?: SS & Schema;
  run(ctx: Context<Infer<SS, JsonValue>>, args: Infer<AS, Args>, kwargs: Infer<KS, Kwargs>): MaybePromise<PluginValue>;
}): DataAccessFunction {
  return fn as DataAccessFunction;
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

/** What defineModel takes besides predict: instantiate, fit and the codec, each call typed by its schemas. */
type ModelParts<Instance, IA, IK, IS, FA, FK, FS> = {
  description?: string;
  instantiate:
    | ((ctx: Context, args: Args, kwargs: Kwargs) => MaybePromise<Instance>)
    | {
        description?: string;
        args?: IA & Schema;
        kwargs?: IK & Schema;
        state?: IS & Schema;
        run(ctx: Context<Infer<IS, JsonValue>>, args: Infer<IA, Args>, kwargs: Infer<IK, Kwargs>): MaybePromise<Instance>;
      };
  fit?:
    | ((ctx: Context, instance: Instance, args: Args, kwargs: Kwargs) => MaybePromise<Instance>)
    | {
        description?: string;
        args?: FA & Schema;
        kwargs?: FK & Schema;
        state?: FS & Schema;
        run(ctx: Context<Infer<FS, JsonValue>>, instance: Instance, args: Infer<FA, Args>, kwargs: Infer<FK, Kwargs>): MaybePromise<Instance>;
      };
  serialize?(instance: Instance): MaybePromise<Uint8Array>;
  deserialize?(bytes: Uint8Array): MaybePromise<Instance>;
};

/**
 * Declares a model type with its instance type inferred from instantiate. Each call may
 * be a plain function, or `{ args, kwargs, state, run }`: then `run` gets its arguments
 * typed by the schemas (zod, valibot, arktype, or a JSON Schema for untyped ones).
 * A predict with `batch` is batched ({@link PredictBatch}): its `run` gets the items.
 *
 * @example
 * ```ts
 * const echo = defineModel({
 *   instantiate: (_ctx, args) => ({ args }),
 *   predict: (_ctx, _model, args) => args,
 * });
 * const tree = defineModel({
 *   instantiate: { kwargs: z.object({ depth: z.number().int().min(1).default(10) }), run: (_ctx, _args, { depth }) => ({ depth }) },
 *   predict: (_ctx, model) => model.depth,
 * });
 * const scaled = defineModel({
 *   instantiate: () => ({ scale: 2 }),
 *   predict: {
 *     batch: { maxSize: 32, maxWaitMs: 5 },
 *     args: z.tuple([z.number()]),
 *     run: (_ctx, model, items) => items.map((item) => item.args[0] * model.scale), // args[0]: number
 *   },
 * });
 * ```
 */
export function defineModel<
  Instance,
  IA = undefined,
  IK = undefined,
  IS = undefined,
  FA = undefined,
  FK = undefined,
  FS = undefined,
  PA = undefined,
  PK = undefined,
  PS = undefined,
>(
  model: ModelParts<Instance, IA, IK, IS, FA, FK, FS> & {
    predict: {
      description?: string;
      /** Batched: see {@link PredictBatch}. */
      batch: BatchOptions;
      concurrent?: true;
      args?: PA & Schema;
      kwargs?: PK & Schema;
      state?: PS & Schema;
      run(
        ctx: Context<Infer<PS, JsonValue>>,
        instance: Instance,
        items: BatchItem<Infer<PA, Args>, Infer<PK, Kwargs>, Infer<PS, JsonValue>>[],
      ): MaybePromise<readonly (PluginValue | Error)[]>;
    };
  },
): ModelType<Instance>;
export function defineModel<
  Instance,
  IA = undefined,
  IK = undefined,
  IS = undefined,
  FA = undefined,
  FK = undefined,
  FS = undefined,
  PA = undefined,
  PK = undefined,
  PS = undefined,
>(
  model: ModelParts<Instance, IA, IK, IS, FA, FK, FS> & {
    predict?:
      | ((ctx: Context, instance: Instance, args: Args, kwargs: Kwargs) => MaybePromise<PluginValue | PredictionWithInstance<Instance>>)
      | {
          description?: string;
          /** Predict never changes the instance: predicts on one model may run at once in several children. */
          concurrent?: boolean;
          batch?: undefined;
          args?: PA & Schema;
          kwargs?: PK & Schema;
          state?: PS & Schema;
          run(
            ctx: Context<Infer<PS, JsonValue>>,
            instance: Instance,
            args: Infer<PA, Args>,
            kwargs: Infer<PK, Kwargs>,
          ): MaybePromise<PluginValue | PredictionWithInstance<Instance>>;
        };
  },
): ModelType<Instance>;
export function defineModel(model: object): ModelType<unknown> {
  return model as ModelType<unknown>;
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
