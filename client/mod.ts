/**
 * Plinth's TypeScript client: create, fit and predict with plain values, follow an
 * action's progress, cancel it with an AbortSignal; the three gRPC services as they are
 * for everything else.
 *
 * @example
 * ```ts
 * import { createPlinthClient, dataAccess } from "plinth/client";
 *
 * const client = createPlinthClient("127.0.0.1:50051");
 * const { modelId } = await client.create("iris.DecisionTree").done;
 * const run = client.fit(modelId, { args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")] });
 * for await (const p of run.progress) console.log(p.status, p.state);
 * console.log((await run.done).state);
 * console.log((await client.predict(modelId, { args: [[[5.1, 3.5, 1.4, 0.2]]] }).done).prediction); // ["setosa"]
 * client.close();
 * ```
 * @module
 */

export { Tensor } from "../sdk/mod.ts";
export { type ActionRun, PlinthActionError, type Progress, type Status } from "./action-run.ts";
export {
  type ActionClient,
  type CallInput,
  type ClientOptions,
  createPlinthClient,
  type EngineClient,
  type ModelResult,
  type PlinthClient,
  type PredictResult,
  type RetryInput,
  type StateClient,
} from "./client.ts";
export { type ArgValue, DataAccessRef, dataAccess, type ResultValue, type Summary } from "./values.ts";
