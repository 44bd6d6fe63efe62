/**
 * A mirror of AIMM's system-test plugin: instantiate keeps its arguments, fit records
 * its arguments, predict echoes its arguments after an optional sleep, reporting
 * progress as it goes (and, with kwargs.remember, stores them as a new revision). The data-access functions echo and add their arguments.
 * @module
 */
import {
  type Args,
  type Context,
  defineModel,
  definePlugin,
  type JsonValue,
  type Kwargs,
  type PluginValue,
  Tensor,
  withInstance,
} from "../../sdk/mod.ts";

/** Values as JSON for the echo: bytes and tensors are summarised. */
function describe(value: PluginValue): JsonValue {
  if (value instanceof Uint8Array) return { bytes: value.byteLength };
  if (value instanceof Tensor) {
    return { tensor: { dtype: value.dtype, shape: [...value.shape] } };
  }
  return value as JsonValue;
}

const echo = (args: Args, kwargs: Kwargs): JsonValue => ({
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

interface Instance {
  args: JsonValue;
  fits: JsonValue[];
  predictions?: JsonValue[];
}

export default definePlugin({
  name: "systest",
  description: "AIMM's system-test plugin: records and echoes its arguments",
  models: {
    "systest.Model": defineModel<Instance>({
      description: "keeps its instantiate arguments and records every fit",
      instantiate: async (ctx, args, kwargs) => {
        await sleep(ctx, Number(kwargs.sleep ?? 0));
        return { args: echo(args, kwargs), fits: [] };
      },
      fit: async (ctx, instance, args, kwargs) => {
        await sleep(ctx, Number(kwargs.sleep ?? 0));
        return { ...instance, fits: [...instance.fits, echo(args, kwargs)] };
      },
      predict: async (ctx, instance, args, kwargs) => {
        await sleep(ctx, Number(kwargs.sleep ?? 0));
        const prediction = { ...(echo(args, kwargs) as object), instance: instance as unknown as JsonValue };
        // kwargs.remember: also store the prediction in the instance, as its next revision.
        if (kwargs.remember === true) {
          return withInstance(prediction, { ...instance, predictions: [...(instance.predictions ?? []), echo(args, {})] });
        }
        return prediction;
      },
    }),
  },
  dataAccess: {
    "systest.echo": {
      description: "returns its arguments as { args, kwargs }, after kwargs.sleep seconds",
      run: async (ctx, args, kwargs) => {
        await sleep(ctx, Number(kwargs.sleep ?? 0));
        return echo(args, kwargs);
      },
    },
    "systest.add": {
      description: "the sum of its numeric positional arguments",
      run: (_ctx, args) => args.reduce<number>((sum, x) => sum + Number(x), 0),
    },
  },
});
