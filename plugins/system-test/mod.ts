/**
 * A mirror of AIMM's system-test plugin: instantiate keeps its arguments, fit records
 * its arguments, predict echoes its arguments after an optional sleep, reporting
 * progress as it goes (and, with kwargs.remember, stores them as a new revision). The data-access functions echo and add their arguments.
 * @module
 */
import { z } from "zod";
import { type Args, type Context, defineDataAccess, defineModel, definePlugin, type JsonValue, Tensor, withInstance } from "../../sdk/mod.ts";

/** Values as JSON for the echo: bytes and tensors are summarised, inside lists and maps too. */
function describe(value: unknown): JsonValue {
  if (value instanceof Uint8Array) return { bytes: value.byteLength };
  if (value instanceof Tensor) {
    return { tensor: { dtype: value.dtype, shape: [...value.shape] } };
  }
  if (Array.isArray(value)) return value.map(describe);
  if (typeof value === "object" && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, describe(v)]));
  return value as JsonValue;
}

const echo = (args: Args, kwargs: Record<string, unknown>): JsonValue => ({
  args: args.map(describe),
  kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, describe(v)])),
});

/** Sleeps for `seconds`, reporting progress every 100 ms; rejects as soon as the action is cancelled. */
async function sleep(ctx: Context, seconds: number): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    ctx.report({ progress: 1 - (end - Date.now()) / (seconds * 1000) });
    await ctx.sleep(Math.min(100, end - Date.now()));
  }
  ctx.report({ progress: 1 });
}

/** Any keyword arguments (they are echoed), with the two it acts on. */
const kwargs = z.looseObject({
  sleep: z.number().min(0).optional().describe("seconds to sleep first, reporting progress"),
  remember: z.boolean().optional().describe("predict only: also store the prediction as the next revision"),
});
/** What it reports while it sleeps. */
const state = z.object({ progress: z.number().min(0).max(1) });

interface Instance {
  args: JsonValue;
  fits: JsonValue[];
  predictions?: JsonValue[];
}

export default definePlugin({
  name: "systest",
  description: "AIMM's system-test plugin: records and echoes its arguments",
  models: {
    "systest.Model": defineModel({
      description: "keeps its instantiate arguments and records every fit",
      instantiate: {
        kwargs,
        state,
        // The instance's type comes from here (a type argument to defineModel would stop
        // TypeScript inferring the schemas' types).
        run: async (ctx, args, kwargs): Promise<Instance> => {
          await sleep(ctx, kwargs.sleep ?? 0);
          return { args: echo(args, kwargs), fits: [] };
        },
      },
      fit: {
        kwargs,
        state,
        run: async (ctx, instance, args, kwargs) => {
          await sleep(ctx, kwargs.sleep ?? 0);
          return { ...instance, fits: [...instance.fits, echo(args, kwargs)] };
        },
      },
      predict: {
        kwargs,
        state,
        run: async (ctx, instance, args, kwargs) => {
          await sleep(ctx, kwargs.sleep ?? 0);
          const prediction = { ...(echo(args, kwargs) as object), instance: instance as unknown as JsonValue };
          // kwargs.remember: also store the prediction in the instance, as its next revision.
          if (kwargs.remember === true) {
            return withInstance(prediction, { ...instance, predictions: [...(instance.predictions ?? []), echo(args, {})] });
          }
          return prediction;
        },
      },
    }),
  },
  dataAccess: {
    "systest.echo": defineDataAccess({
      description: "returns its arguments as { args, kwargs }, after kwargs.sleep seconds",
      kwargs,
      state,
      run: async (ctx, args, kwargs) => {
        await sleep(ctx, kwargs.sleep ?? 0);
        return echo(args, kwargs);
      },
    }),
    "systest.add": defineDataAccess({
      description: "the sum of its numeric positional arguments",
      args: z.array(z.number()),
      run: (_ctx, args) => args.reduce((sum, x) => sum + x, 0),
    }),
  },
});
