/**
 * Builds a small ONNX model with no download: the MNIST network of plugins/mnist, trained
 * on the `mnist` package's digits (or left at its seeded initial weights), written as an
 * ONNX graph (MatMul, Add, Relu, Softmax) by plugins/onnx/mlp-graph.ts.
 *
 *   npx tsx scripts/build-onnx.ts OUT.onnx [--hidden 128] [--epochs 2] [--count 8000] [--seed 1]
 *
 * `--epochs 0` keeps the initial weights: a model of a given size for a benchmark
 * (`--hidden 6400` ≈ 20 MB, `--hidden 32` ≈ 100 kB). Prints the path, the size and, when
 * trained, the accuracy on the held-out digits [8000, 10000).
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { digits, PIXELS, TOTAL } from "../plugins/mnist/digits.ts";
import mnist from "../plugins/mnist/mod.ts";
import { decode, denseLayers, type Network, tf } from "../plugins/mnist/network.ts";
import { mlpToOnnx } from "../plugins/onnx/mlp-graph.ts";
import { Tensor } from "../sdk/mod.ts";
import { testPlugin } from "../sdk/testing.ts";

export interface BuildOptions {
  /** Units of the one hidden layer; default 128. */
  hidden?: number;
  /** Epochs over the training digits; 0: the seeded initial weights. Default 2. */
  epochs?: number;
  /** Training digits, [0, count); default 8000. */
  count?: number;
  /** Seeds the initial weights; default 1. */
  seed?: number;
}

export interface BuiltModel {
  /** The ONNX file. */
  bytes: Uint8Array;
  /** The TensorFlow.js network it was written from. */
  network: Network;
}

/** The network trained (through the mnist plugin's own fit) and written as ONNX. */
export async function buildMnistOnnx({ hidden = 128, epochs = 2, count = 8000, seed = 1 }: BuildOptions = {}): Promise<BuiltModel> {
  const plugin = testPlugin(mnist);
  let model = await plugin.instantiate("mnist.MLP", [], { hidden: [hidden], seed });
  if (epochs > 0) {
    const d = digits(0, count);
    const labelled = { images: new Tensor("float32", [count, PIXELS], d.images), labels: new Tensor("int32", [count], d.labels) };
    model = await plugin.fit(model, [labelled], { epochs });
  }
  const network = decode(model.instance);
  return { bytes: mlpToOnnx(denseLayers(network)), network };
}

/** The network's accuracy on the held-out digits [8000, 10000). */
export function heldOutAccuracy(network: Network): number {
  const held = digits(8000, TOTAL - 8000);
  const predicted = tf.tidy(() => tf.argMax(network.model.predict(tf.tensor2d(held.images, [TOTAL - 8000, PIXELS])) as tf.Tensor2D, 1).dataSync());
  return held.labels.filter((label, i) => predicted[i] === label).length / held.labels.length;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { hidden: { type: "string" }, epochs: { type: "string" }, count: { type: "string" }, seed: { type: "string" } },
  });
  const int = (name: keyof typeof values, min: number, max: number, fallback: number) => {
    const text = values[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer from ${min} to ${max}, got ${text}`);
    return n;
  };
  const [out, ...rest] = positionals;
  if (!out || rest.length > 0) throw new Error("usage: npx tsx scripts/build-onnx.ts OUT.onnx [--hidden 128] [--epochs 2] [--count 8000] [--seed 1]");
  const options = {
    hidden: int("hidden", 1, 8192, 128),
    epochs: int("epochs", 0, 100, 2),
    count: int("count", 1, 8000, 8000),
    seed: int("seed", 0, 2 ** 31, 1),
  };
  const { bytes, network } = await buildMnistOnnx(options);
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeFileSync(out, bytes);
  const accuracy = options.epochs > 0 ? `, held-out accuracy ${heldOutAccuracy(network).toFixed(4)} on digits [8000, 10000)` : " (initial weights)";
  console.log(`${resolve(out)}: ${bytes.byteLength} bytes, 784-${options.hidden}-10${accuracy}`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
