// The plugin this project serves (plinth.yaml): a data-access function that makes points
// on a line, and a model type that learns the line from them by gradient descent.

import { defineDataAccess, defineModel, definePlugin, isTensor, Tensor } from "plinth/sdk";
import { z } from "zod";

/** What a fitted model keeps: Plinth stores it between calls. */
interface Line {
  slope: number;
  intercept: number;
  /** How many fits made it. */
  fits: number;
}

/** A 1-D float32 tensor, typed as one: its data is a Float32Array. */
const vector = z.custom<Tensor<"float32">>(isTensor("float32", [-1]), "must be a 1-D float32 tensor");
const points = z.object({ x: vector, y: vector }).describe("the points to fit: x and y, as long as each other");

export default definePlugin({
  name: "__NAME__",
  description: "learns a line y = slope * x + intercept",
  dataAccess: {
    "__NAME__.points": defineDataAccess({
      description: "n points on y = slope * x + intercept, x in [0, 1), with noise",
      kwargs: z.object({
        n: z.number().int().min(2).max(1_000_000).default(200),
        slope: z.number().default(2),
        intercept: z.number().default(1),
        noise: z.number().min(0).default(0.05),
      }),
      run: (_ctx, _args, { n, slope, intercept, noise }) => {
        const x = Float32Array.from({ length: n }, (_, i) => i / n);
        const y = x.map((xi) => slope * xi + intercept + (Math.random() - 0.5) * 2 * noise);
        return { x: new Tensor("float32", [n], x), y: new Tensor("float32", [n], y) };
      },
    }),
  },
  models: {
    "__NAME__.Line": defineModel({
      description: "fit(points) learns the line; predict(xs) gives its y for each x",
      instantiate: (): Line => ({ slope: 0, intercept: 0, fits: 0 }),
      fit: {
        args: z.tuple([points]),
        kwargs: z.object({
          epochs: z.number().int().min(1).max(100_000).default(500),
          learning_rate: z.number().positive().default(0.5),
        }),
        state: z.object({ epoch: z.number(), loss: z.number() }),
        run: (ctx, model, [{ x, y }], { epochs, learning_rate }) => {
          if (x.data.length !== y.data.length) throw new Error(`x has ${x.data.length} points and y ${y.data.length}: give as many of each`);
          let { slope, intercept } = model;
          const n = x.data.length;
          for (let epoch = 1; epoch <= epochs; epoch++) {
            ctx.signal.throwIfAborted(); // a cancel stops the fit here
            let dSlope = 0;
            let dIntercept = 0;
            let loss = 0;
            for (let i = 0; i < n; i++) {
              const error = slope * x.data[i]! + intercept - y.data[i]!;
              loss += error * error;
              dSlope += error * x.data[i]!;
              dIntercept += error;
            }
            slope -= (learning_rate * 2 * dSlope) / n;
            intercept -= (learning_rate * 2 * dIntercept) / n;
            ctx.report({ epoch, loss: loss / n }); // progress: cheap, the SDK coalesces it
          }
          ctx.log.info("fitted", { points: n, slope, intercept });
          return { slope, intercept, fits: model.fits + 1 };
        },
      },
      predict: {
        args: z.tuple([z.array(z.number()).min(1).describe("the x to predict y for")]),
        run: (_ctx, model, [xs]) => {
          if (model.fits === 0) throw new Error("not fitted yet: call fit first");
          return xs.map((x) => model.slope * x + model.intercept);
        },
      },
    }),
  },
});
