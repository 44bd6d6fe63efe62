/**
 * The ONNX plugin for bench:serving's real-model figures: `onnx.Model` (batched
 * predicts) as it is, beside `onnx.Unbatched`, the same model type whose predict is
 * unbatched and concurrent: each call runs the plugin's own predict on a batch of one.
 */
import onnx from "../../plugins/onnx/mod.ts";
import { type BatchItem, defineModel, definePlugin, type PluginValue } from "../../sdk/mod.ts";

const model = onnx.models!["onnx.Model"]!;
type Run = (ctx: unknown, instance: unknown, items: BatchItem[]) => Promise<(PluginValue | Error)[]>;
const predict = model.predict as unknown as { args: never; kwargs: never; run: Run };

export default definePlugin({
  ...onnx,
  models: {
    "onnx.Model": model,
    "onnx.Unbatched": defineModel({
      instantiate: model.instantiate,
      serialize: model.serialize!,
      deserialize: model.deserialize!,
      predict: {
        concurrent: true,
        args: predict.args,
        kwargs: predict.kwargs,
        run: async (ctx, instance, args, kwargs) => {
          const item = { args, kwargs, signal: ctx.signal, report: ctx.report, log: ctx.log, info: { actionId: ctx.info.actionId } };
          const [result] = await predict.run(ctx, instance, [item as BatchItem]);
          if (result instanceof Error) throw result;
          return result!;
        },
      },
    }),
  },
});
