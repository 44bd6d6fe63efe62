/**
 * A model whose instance is `mb` megabytes of float32 weights, for bench:serving: what a
 * served model costs when its instance is large. Deserializing copies the weights (as a
 * real library rebuilds its tensors) and counts itself per child; predict reads 1,000
 * weights and says which child answered, how many instances that child has deserialized,
 * and its resident memory.
 */
import { defineModel, definePlugin } from "../../sdk/mod.ts";

let loads = 0;

/** Reads 1,000 weights, then (kwargs.ms) waits as a call bound by an accelerator would. */
async function predict(ctx: { sleep(ms: number): Promise<void> }, model: Weights, kwargs: Record<string, unknown>) {
  let sum = 0;
  const step = Math.max(1, Math.floor(model.weights.length / 1000));
  for (let i = 0; i < model.weights.length; i += step) sum += model.weights[i]!;
  const ms = Number(kwargs.ms ?? 0);
  if (ms > 0) await ctx.sleep(ms);
  return { sum, pid: process.pid, loads, rss: process.memoryUsage().rss };
}

function instantiate(kwargs: Record<string, unknown>): Weights {
  const n = Math.max(1, Math.floor((Number(kwargs.mb ?? 1) * 2 ** 20) / 4));
  const weights = new Float32Array(n);
  for (let i = 0; i < n; i++) weights[i] = (i % 1000) / 1000;
  return { weights };
}

const serialize = (model: Weights) => new Uint8Array(model.weights.buffer, model.weights.byteOffset, model.weights.byteLength);
function deserialize(bytes: Uint8Array): Weights {
  loads++;
  const copy = bytes.slice();
  return { weights: new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4) };
}

interface Weights {
  weights: Float32Array;
}

export default definePlugin({
  name: "weights",
  models: {
    "weights.Dense": defineModel<Weights>({
      instantiate: (_ctx, _args, kwargs) => instantiate(kwargs),
      serialize,
      deserialize,
      predict: (ctx, model, _args, kwargs) => predict(ctx, model, kwargs),
    }),
    // The same, with a predict declared concurrent: several children may serve one model.
    "weights.Shared": defineModel<Weights>({
      instantiate: (_ctx, _args, kwargs) => instantiate(kwargs),
      serialize,
      deserialize,
      predict: { concurrent: true, run: (ctx, model, _args, kwargs) => predict(ctx, model, kwargs) },
    }),
  },
});
