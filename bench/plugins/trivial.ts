/** Plugins for the benchmarks: as little work as possible, so the engine's own cost shows. */
import { defineModel, definePlugin } from "../../sdk/mod.ts";

export default definePlugin({
  name: "bench",
  models: {
    "bench.Trivial": defineModel({
      instantiate: () => ({}),
      predict: (_ctx, _model, args) => args[0] ?? null,
    }),
    "bench.Sleep": defineModel({
      instantiate: () => ({}),
      // Sleep-bound work: waits kwargs.ms (50) and answers; a cluster's throughput is its children's.
      predict: async (ctx, _model, _args, kwargs) => {
        await ctx.sleep(Number(kwargs.ms ?? 50));
        return null;
      },
    }),
    "bench.Sleeper": defineModel({
      instantiate: () => ({}),
      // Waits for the cancel and gives up at once: a cooperative plugin.
      predict: (ctx) =>
        new Promise((_, reject) => {
          // Its child's pid, for a bench that kills the child from outside.
          const deno = (globalThis as { Deno?: { pid: number } }).Deno;
          ctx.report({ waiting: true, pid: deno ? deno.pid : process.pid });
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        }),
    }),
    "bench.Poller": defineModel({
      instantiate: () => ({}),
      // Looks at its signal every 10 ms, as bench/plugins/bullmq-processor.js's "poll" job
      // does (bench:peer): reports its child's pid, then runs until cancelled or killed.
      predict: async (ctx) => {
        const deno = (globalThis as { Deno?: { pid: number } }).Deno;
        ctx.report({ waiting: true, pid: deno ? deno.pid : process.pid });
        while (!ctx.signal.aborted) await new Promise((resolve) => setTimeout(resolve, 10));
        throw ctx.signal.reason;
      },
    }),
    "bench.Reporter": defineModel({
      instantiate: () => ({}),
      // Reports every kwargs.every ms (10) for kwargs.seconds, each with the time it was
      // made (ms since the epoch, sub-ms); the SDK and the engine send at most one update
      // per engine.progress_interval.
      predict: async (ctx, _model, _args, kwargs) => {
        const end = Date.now() + Number(kwargs.seconds ?? 1) * 1000;
        const every = Number(kwargs.every ?? 10);
        let i = 0;
        while (Date.now() < end) {
          ctx.report({ i: ++i, at: performance.timeOrigin + performance.now() });
          await new Promise((resolve) => setTimeout(resolve, every));
        }
        ctx.report({ i, done: true });
        return i;
      },
    }),
    "bench.Progress": defineModel({
      instantiate: () => ({}),
      // A fit as a dashboard shows it: { progress, epoch, loss } every kwargs.every ms (50) for kwargs.seconds (1).
      predict: async (ctx, _model, _args, kwargs) => {
        const ms = Number(kwargs.seconds ?? 1) * 1000;
        const every = Number(kwargs.every ?? 50);
        const start = Date.now();
        for (let epoch = 1; Date.now() - start < ms; epoch++) {
          ctx.report({ progress: (Date.now() - start) / ms, epoch, loss: 1 / epoch });
          await ctx.sleep(every);
        }
        return null;
      },
    }),
    "bench.Spinner": defineModel({
      instantiate: () => ({}),
      // CPU-bound: a synchronous loop that reports and checks for its cancel, and never yields.
      predict: (ctx) => {
        for (let i = 0; ; i++) {
          if (i % 10_000 === 0) ctx.report({ spinning: i });
          ctx.checkpoint();
        }
      },
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
