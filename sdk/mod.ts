/**
 * Plinth plugin SDK: declare model types and data-access functions that the Plinth
 * engine runs in child processes, on Node or Deno.
 *
 * @example
 * ```ts
 * import { definePlugin, defineModel } from "./sdk/mod.ts";
 *
 * export default definePlugin({
 *   name: "demo",
 *   models: {
 *     "demo.Mean": defineModel({
 *       instantiate: () => ({ mean: 0 }),
 *       fit: (ctx, _model, [xs]) => {
 *         const values = xs as number[];
 *         ctx.report({ rows: values.length });
 *         return { mean: values.reduce((a, b) => a + b, 0) / values.length };
 *       },
 *       predict: (_ctx, model) => model.mean,
 *     }),
 *   },
 * });
 * ```
 * @module
 */
export type { CallInfo, Context, Logger } from "./context.ts";
export { PluginError } from "./errors.ts";
export {
  type BatchItem,
  type BatchOptions,
  type DataAccessFunction,
  type Declared,
  defineDataAccess,
  defineModel,
  definePlugin,
  type Fit,
  type Instantiate,
  type ModelType,
  type Plugin,
  type Predict,
  type PredictBatch,
  type PredictionWithInstance,
  withInstance,
} from "./plugin.ts";
export type { Infer, JsonSchema, Schema, StandardSchema } from "./schema.ts";
export { type Args, type DType, isTensor, type JsonValue, type Kwargs, type PluginValue, Tensor, type TensorData } from "./values.ts";
