// The MNIST plugin in-process, as its author tests it: `node --import tsx --test
// plugins/mnist/mod.test.ts`, or `npx deno test --allow-read --allow-env plugins/mnist/mod.test.ts`.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { test } from "node:test";
import type { Tensor } from "../../sdk/mod.ts";
import { Tensor as T } from "../../sdk/mod.ts";
import { testPlugin } from "../../sdk/testing.ts";
import plugin from "./mod.ts";
import { decode } from "./network.ts";

type Digits = { images: Tensor<"float32">; labels: Tensor<"int32"> };

test("learns digits from a few hundred, reporting loss and accuracy each epoch; predicts in batches", async () => {
  const h = testPlugin(plugin);
  const train = (await h.dataAccess("mnist.digits", [], { start: 0, count: 600 })) as Digits;
  assert.deepEqual(train.images.shape, [600, 784]);
  const created = await h.instantiate("mnist.MLP", [], { hidden: [32] });
  const fitted = await h.fit(created, [train], { epochs: 3, batch_size: 32 });
  const epochs = (h.calls.at(-1)!.reports as { epoch: number; loss?: number; accuracy?: number }[]).filter((r) => r.loss !== undefined);
  assert.deepEqual([...new Set(epochs.map((r) => r.epoch))], [1, 2, 3]);
  assert.ok(epochs.at(-1)!.loss! < epochs[0]!.loss!, "the loss falls from the first epoch to the last");

  const held = (await h.dataAccess("mnist.digits", [], { start: 8000, count: 300 })) as Digits;
  const { prediction } = await h.predict(fitted, [held.images]);
  const digits = (prediction as Tensor<"int32">).data;
  const accuracy = digits.filter((d, i) => d === held.labels.data[i]).length / digits.length;
  assert.ok(accuracy > 0.5, `accuracy on 300 digits not trained on: ${accuracy} (chance: 0.1)`);

  // The instance the fit started from is untouched: it predicts as before.
  const before = (await h.predict(created, [held.images])).prediction as Tensor<"int32">;
  assert.notDeepEqual(before.data, digits);

  // A batch: each item gets its own rows' digits, as when predicted alone; probabilities when asked.
  const rows = (start: number, n: number) => new T("float32", [n, 784], held.images.data.slice(start * 784, (start + n) * 784));
  const outcomes = await h.predictBatch(fitted, [
    { args: [rows(0, 3)] },
    { args: [rows(3, 1)], kwargs: { probabilities: true } },
    { args: [rows(4, 2)] },
  ]);
  const values = outcomes.map((o) => ("prediction" in o ? o.prediction : assert.fail(o.error)));
  assert.deepEqual(Array.from((values[0] as Tensor<"int32">).data), Array.from(digits.slice(0, 3)));
  const second = values[1] as { digits: Tensor<"int32">; probabilities: Tensor<"float32"> };
  assert.deepEqual(Array.from(second.digits.data), [digits[3]]);
  assert.deepEqual(second.probabilities.shape, [1, 10]);
  assert.ok(Math.abs(second.probabilities.data.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  assert.deepEqual(Array.from((values[2] as Tensor<"int32">).data), Array.from(digits.slice(4, 6)));
});

test("refuses images of the wrong shape or dtype and mismatched labels, each predict of a batch alone", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("mnist.MLP", [], { hidden: [8] });
  const outcomes = await h.predictBatch(model, [
    { args: [new T("float32", [2, 700], new Float32Array(1400))] },
    { args: [new T("float64", [1, 784], new Float64Array(784))] },
    { args: [new T("float32", [1, 784], new Float32Array(784))] },
  ]);
  const shape = "must be a float32 tensor of shape [n, 784], or rows of 784 numbers from 0 to 1";
  assert.deepEqual(
    outcomes.map((o) => ("error" in o ? o.error.message : "ok")),
    [`args[0]: ${shape}`, `args[0]: ${shape}`, "ok"],
  );
  const images = new T("float32", [2, 784], new Float32Array(2 * 784));
  await assert.rejects(h.fit(model, [{ images, labels: new T("int32", [3], new Int32Array(3)) }]), {
    code: "invalid_argument",
    message: "args[0]: 2 images but 3 labels",
  });
  await assert.rejects(h.dataAccess("mnist.digits", [], { start: 9990, count: 20 }), {
    code: "invalid_argument",
    message: "kwargs: start + count must be at most 10000 (got 9990 + 20)",
  });
});

test("an instance's bytes read back the same from a Node Buffer at any offset (whose slice() is a view)", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("mnist.MLP", [], { hidden: [8] });
  const pooled = Buffer.concat([Buffer.from([1, 2, 3]), Buffer.from(model.instance), Buffer.from([4, 5])]).subarray(3, 3 + model.instance.byteLength);
  const [a, b] = [decode(model.instance), decode(pooled)];
  assert.deepEqual(
    a.model.getWeights().map((w) => Array.from(w.dataSync())),
    b.model.getWeights().map((w) => Array.from(w.dataSync())),
  );
});

test("stores a checkpoint after each epoch, and a retried fit resumes from it at the next epoch", async () => {
  const h = testPlugin(plugin);
  const train = (await h.dataAccess("mnist.digits", [], { start: 0, count: 200 })) as Digits;
  const created = await h.instantiate("mnist.MLP", [], { hidden: [16] });
  await h.fit(created, [train], { epochs: 3, batch_size: 50 });
  const checkpoints = h.calls.at(-1)!.checkpoints as { epoch: number; weights: Uint8Array }[];
  // After epochs 1 and 2: after the last, the fit's result is what counts.
  assert.deepEqual(
    checkpoints.map((c) => c.epoch),
    [1, 2],
  );
  // The second attempt, given the first's checkpoint after epoch 2, trains epoch 3 alone, from those weights.
  const resumed = await h.fit(created, [train], { epochs: 3, batch_size: 50 }, { attempt: 2, checkpoint: checkpoints[1]! });
  const epochs = (h.calls.at(-1)!.reports as { epoch: number; loss?: number }[]).filter((r) => r.loss !== undefined).map((r) => r.epoch);
  assert.deepEqual([...new Set(epochs)], [3]);
  assert.equal(decode(resumed.instance).epochs, 3);
});
