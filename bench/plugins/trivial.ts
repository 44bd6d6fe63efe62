/** Plugins for the benchmarks: as little work as possible, so the engine's own cost shows. */
import { defineModel, definePlugin } from "../../sdk/mod.ts";

export default definePlugin({
  name: "bench",
  models: {
    "bench.Trivial": defineModel({
      instantiate: () => ({}),
      predict: (_ctx, _model, args) => args[0] ?? null,
    }),
    "bench.Sleeper": defineModel({
      instantiate: () => ({}),
      // Waits for the cancel and gives up at once: a cooperative plugin.
      predict: (ctx) =>
        new Promise((_, reject) => {
          ctx.report({ waiting: true });
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        }),
    }),
    "bench.Stubborn": defineModel({
      instantiate: () => ({}),
      // Ignores the cancel: only SIGKILL ends it.
      predict: (ctx) => {
        ctx.report({ waiting: true });
        return new Promise(() => setInterval(() => {}, 1000));
      },
    }),
  },
});
