/**
 * A predict whose cost is mostly fixed per call, as on an accelerator, for bench:serving's
 * batching figure: 20 ms per call plus 0.1 ms per item (sleep-bound, so two children on
 * two cores do not compete for them). `batched.Model` declares batched predicts (up to 32
 * per call, waiting at most 5 ms for them); `batched.Single` is its unbatched twin, declared
 * concurrent, whose every call costs 20.1 ms.
 */
import { defineModel, definePlugin } from "../../sdk/mod.ts";

const cost = (items: number) => 20 + 0.1 * items;

export default definePlugin({
  name: "batched",
  models: {
    "batched.Model": defineModel({
      instantiate: () => ({ scale: 2 }),
      predict: {
        batch: { maxSize: 32, maxWaitMs: 5 },
        run: async (ctx, model, items) => {
          await ctx.sleep(cost(items.length));
          return items.map((item) => ({ y: Number(item.args[0] ?? 0) * model.scale, batch: items.length }));
        },
      },
    }),
    "batched.Single": defineModel({
      instantiate: () => ({ scale: 2 }),
      predict: {
        concurrent: true,
        run: async (ctx, model, args) => {
          await ctx.sleep(cost(1));
          return { y: Number(args[0] ?? 0) * model.scale, batch: 1 };
        },
      },
    }),
  },
});
