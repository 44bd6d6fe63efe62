/** Two model types that differ only in their schema: Iris's predict arguments, declared with zod or not at all. */
import { z } from "zod";
import { defineModel, definePlugin, Tensor } from "../../sdk/mod.ts";

/** The example plugin's (plugins/iris) predict arguments. */
export const flowers = z.tuple([
  z.union([
    z.instanceof(Tensor).refine((t) => t.shape.length === 2 && t.shape[1] === 4, "must be a [n, 4] tensor"),
    z.array(z.array(z.number()).length(4)),
  ]),
]);

export default definePlugin({
  name: "bench_schemas",
  models: {
    "bench.Untyped": defineModel({
      instantiate: () => ({}),
      predict: (_ctx, _model, args) => (args[0] as unknown[]).length,
    }),
    "bench.Typed": defineModel({
      instantiate: () => ({}),
      predict: { args: flowers, run: (_ctx, _model, [rows]) => (rows instanceof Tensor ? rows.shape[0]! : rows.length) },
    }),
  },
});
