// node --import tsx --test plugins/onnx/mod.test.ts
import assert from "node:assert/strict";
import { test } from "node:test";
import { Tensor } from "../../sdk/mod.ts";
import { testPlugin } from "../../sdk/testing.ts";
import { type DenseLayer, mlpToOnnx } from "./mlp-graph.ts";
import plugin from "./mod.ts";

/** A small seeded generator: the same weights every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

const random = seeded(7);
const layer = (inputs: number, outputs: number): DenseLayer => ({
  in: inputs,
  out: outputs,
  kernel: Float32Array.from({ length: inputs * outputs }, random),
  bias: Float32Array.from({ length: outputs }, random),
});
const layers = [layer(6, 5), layer(5, 3)];
const bytes = mlpToOnnx(layers);

/** The network in plain JavaScript: relu between layers, softmax last. */
function reference(rows: Float32Array, n: number): number[] {
  let x = Array.from(rows);
  for (const [i, l] of layers.entries()) {
    const y: number[] = [];
    for (let r = 0; r < n; r++) {
      for (let o = 0; o < l.out; o++) {
        let sum = l.bias[o]!;
        for (let k = 0; k < l.in; k++) sum += x[r * l.in + k]! * l.kernel[k * l.out + o]!;
        y.push(i < layers.length - 1 ? Math.max(0, sum) : sum);
      }
    }
    x = y;
  }
  const out = layers.at(-1)!.out;
  for (let r = 0; r < n; r++) {
    const row = x.slice(r * out, (r + 1) * out);
    const max = Math.max(...row);
    const exp = row.map((v) => Math.exp(v - max));
    const total = exp.reduce((a, b) => a + b, 0);
    for (let o = 0; o < out; o++) x[r * out + o] = exp[o]! / total;
  }
  return x;
}

const images = (n: number, width = 6) => new Tensor("float32", [n, width], Float32Array.from({ length: n * width }, random));

test("a batch of predicts of different row counts, each as the network computes it; the state describes the model", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("onnx.Model", [bytes]);
  assert.deepEqual(h.calls[0]!.reports.at(-1), {
    inputs: [{ name: "images", dtype: "float32", shape: ["N", 6], tensor: true }],
    outputs: [{ name: "probabilities", dtype: "float32", shape: ["N", 3], tensor: true }],
    batchable: true,
  });
  const inputs = [images(1), images(3), images(2), images(4)];
  // One given by input name, one asking for its output by name, one bad in the middle.
  const outcomes = await h.predictBatch(model, [
    { args: [inputs[0]!] },
    { args: [{ images: inputs[1]! }] },
    { args: [images(2, 7)] },
    { args: [inputs[2]!], kwargs: { outputs: ["probabilities"] } },
    { args: [inputs[3]!] },
  ]);
  assert.match(
    String((outcomes[2] as { error: Error }).error.message),
    /^args\[0\]: must be a float32 tensor of shape \[N, 6\], got float32 \[2, 7\]$/,
  );
  const good = outcomes.filter((_, i) => i !== 2);
  for (const [i, outcome] of good.entries()) {
    assert.ok("prediction" in outcome, `item ${i} failed: ${"error" in outcome ? outcome.error.message : ""}`);
    const { probabilities } = outcome.prediction as { probabilities: Tensor };
    const n = inputs[i]!.shape[0]!;
    assert.equal(probabilities.dtype, "float32");
    assert.deepEqual(probabilities.shape, [n, 3]);
    const expected = reference(inputs[i]!.data as Float32Array, n);
    for (const [j, p] of probabilities.data.entries())
      assert.ok(Math.abs(Number(p) - expected[j]!) < 1e-5, `item ${i}[${j}]: ${p} vs ${expected[j]}`);
  }
});

test("a predict alone (a batch of one) on a model deserialized from its bytes", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("onnx.Model", [bytes]);
  assert.deepEqual(model.instance, bytes);
  const x = images(2);
  const { prediction } = await h.predict(model, [x]);
  const p = (prediction as { probabilities: Tensor }).probabilities;
  const expected = reference(x.data as Float32Array, 2);
  assert.ok(p.data.every((v, j) => Math.abs(Number(v) - expected[j]!) < 1e-5));
});

test("a file that does not load is refused with ONNX Runtime's reason", async () => {
  const h = testPlugin(plugin);
  await assert.rejects(h.instantiate("onnx.Model", [new Uint8Array([1, 2, 3, 4, 5])]), {
    code: "invalid_argument",
    message: "the ONNX file does not load: Failed to load model because protobuf parsing failed.",
  });
});

test("inputs by a name the model does not have, of the wrong dtype or width, or an unknown output, are refused naming what it takes", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("onnx.Model", [bytes]);
  const refused = async (args: unknown[], kwargs: Record<string, unknown> = {}) => {
    const [outcome] = await h.predictBatch(model, [{ args: args as never, kwargs: kwargs as never }]);
    assert.ok(outcome && "error" in outcome, "expected an error");
    return { code: (outcome.error as Error & { code?: string }).code, message: outcome.error.message };
  };
  assert.deepEqual(await refused([{ imgs: images(1) }]), {
    code: "invalid_argument",
    message: 'args[0]: no input "imgs"; the model takes images (float32 [N, 6])',
  });
  assert.deepEqual(await refused([{}]), {
    code: "invalid_argument",
    message: 'args[0]: input "images" is missing; the model takes images (float32 [N, 6])',
  });
  assert.deepEqual(await refused([new Tensor("float64", [1, 6], new Float64Array(6))]), {
    code: "invalid_argument",
    message: "args[0]: must be a float32 tensor of shape [N, 6], got float64 [1, 6]",
  });
  assert.deepEqual(await refused([{ images: images(2, 5) }]), {
    code: "invalid_argument",
    message: "args[0].images: must be a float32 tensor of shape [N, 6], got float32 [2, 5]",
  });
  assert.deepEqual(await refused([images(1)], { outputs: ["logits"] }), {
    code: "invalid_argument",
    message: 'kwargs.outputs: no output "logits"; the model gives probabilities (float32 [N, 3])',
  });
  assert.equal((await refused([[1, 2, 3]])).code, "invalid_argument");
});

test("a path is refused when the plugin has no permissions configured, saying how to allow it", async () => {
  assert.equal(process.permission, undefined, "run without --experimental-permission");
  const h = testPlugin(plugin);
  await assert.rejects(h.instantiate("onnx.Model", ["models/mnist.onnx"]), {
    code: "permission_denied",
    message:
      "args[0]: the onnx plugin reads no model file when it has no permissions configured; list its folder in the plugin's config, " +
      "plugins[i].permissions.read (with plugins[i].permissions.addons: true), or send the file's bytes",
  });
});

test("rows of numbers, as JSON carries them, predict as the same tensor would; ragged rows are refused", async () => {
  const h = testPlugin(plugin);
  const model = await h.instantiate("onnx.Model", [bytes]);
  const x = images(2);
  const rows = [Array.from(x.data.subarray(0, 6)), Array.from(x.data.subarray(6, 12))];
  const [fromRows, fromTensor, ragged] = await h.predictBatch(model, [
    { args: [rows] },
    { args: [x] },
    { args: [{ images: [[1, 2, 3, 4, 5, 6], [1]] }] },
  ]);
  const p = (o: typeof fromRows) => ((o as { prediction: { probabilities: Tensor } }).prediction.probabilities.data as Float32Array).join();
  assert.equal(p(fromRows), p(fromTensor));
  assert.equal(
    (ragged as { error: Error }).error.message,
    "args[0].images: rows must be arrays of one length each, down to numbers (the input is float32)",
  );
});
