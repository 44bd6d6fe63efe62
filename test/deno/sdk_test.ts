/// <reference lib="deno.ns" />
/**
 * The SDK's core under Deno (`deno test`), run by test/sdk.test.ts: the harness, values
 * and frames behave as under Node. No std imports, so no network is needed.
 */
import { defineModel, definePlugin, PluginError, Tensor, withInstance } from "../../sdk/mod.ts";
import { testPlugin } from "../../sdk/testing.ts";
import { decodeValue, encodeValue } from "../../sdk/worker/codec.ts";
import { encodeFrame, FrameDecoder } from "../../sdk/worker/frames.ts";

function equal(actual: unknown, expected: unknown): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`expected ${e}, got ${a}`);
}

const plugin = definePlugin({
  name: "counter",
  models: {
    "counter.Model": {
      instantiate: (_ctx, [start]) => ({ n: Number(start) }),
      fit: (ctx, model: { n: number }, [step]) => {
        ctx.report({ step: Number(step) });
        return { n: model.n + Number(step) };
      },
      predict: (_ctx, model: { n: number }) => withInstance(model.n, { n: model.n + 1 }),
    },
  },
});

Deno.test("the harness runs instantiate, fit and predict through serialization", async () => {
  const h = testPlugin(plugin);
  let model = await h.instantiate("counter.Model", [1]);
  model = await h.fit(model, [2]);
  const { prediction, model: next } = await h.predict(model);
  equal(prediction, 3);
  equal(JSON.parse(new TextDecoder().decode(next.instance)), { n: 4 });
  equal(h.calls[1]!.reports, [{ step: 2 }]);
});

Deno.test("the harness refuses a predict that changes its instance in place", async () => {
  const h = testPlugin(
    definePlugin({
      name: "mutator",
      models: {
        "mutator.Model": {
          instantiate: () => ({ calls: 0 }),
          predict: (_ctx, model: { calls: number }) => ++model.calls,
        },
      },
    }),
  );
  const model = await h.instantiate("mutator.Model");
  let message = "";
  await h.predict(model).catch((error: Error) => (message = error.message));
  equal(message.startsWith("predict on mutator.Model changed its instance in place"), true);
});

Deno.test("the harness runs a batched predict: each item its own result or error, and a batch of one for predict", async () => {
  const batched = definePlugin({
    name: "scaled",
    models: {
      "scaled.Model": defineModel({
        instantiate: () => ({ factor: 3 }),
        predict: {
          batch: { maxSize: 8, maxWaitMs: 1 },
          run: (_ctx, model, items) =>
            items.map(({ args: [x] }) => (Number(x) < 0 ? new PluginError("invalid_argument", "below 0") : Number(x) * model.factor)),
        },
      }),
    },
  });
  const h = testPlugin(batched);
  const model = await h.instantiate("scaled.Model");
  const outcomes = await h.predictBatch(model, [{ args: [1] }, { args: [-1] }, { args: [2] }]);
  equal(
    outcomes.map((o) => ("error" in o ? o.error.message : o.prediction)),
    [3, "below 0", 6],
  );
  equal((await h.predict(model, [5])).prediction, 15);
});

Deno.test("a tensor survives the wire encoding", () => {
  const t = new Tensor("float32", [2, 2], new Float32Array([1, 2, 3, 4]));
  const back = decodeValue(encodeValue(t)) as Tensor;
  equal([back.dtype, back.shape, Array.from(back.data as Float32Array)], ["float32", [2, 2], [1, 2, 3, 4]]);
});

Deno.test("frames split across chunks come out whole", () => {
  const frame = encodeFrame(new Uint8Array([1, 2, 3, 4, 5]));
  const decoder = new FrameDecoder(1024);
  equal(decoder.push(frame.subarray(0, 3)).length, 0);
  const out = decoder.push(frame.subarray(3));
  equal(Array.from(out[0]!), [1, 2, 3, 4, 5]);
});
