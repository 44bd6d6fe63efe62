/**
 * The multi-layer perceptron on TensorFlow.js (core, layers and the WebAssembly backend:
 * no native download at install), and its weights as bytes: a JSON header, then every
 * weight as little-endian float32.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-wasm";
import * as tfl from "@tensorflow/tfjs-layers";

tf.enableProdMode(); // also silences the "install tfjs-node" banner
// WebAssembly is 5–6× the pure-JavaScript backend here; that one where it cannot start.
if (!(await tf.setBackend("wasm").catch(() => false))) await tf.setBackend("cpu");

export { tf, tfl };

/** What a network is made of and has learnt. */
export interface Network {
  /** Sizes of the hidden layers, each followed by a ReLU; softmax over 10 digits last. */
  hidden: number[];
  learningRate: number;
  seed: number;
  /** Epochs trained, over every fit. */
  epochs: number;
  model: tfl.Sequential;
}

// The wasm backend's memory holds weights until disposed: a network let go (a resident
// instance evicted, a revision superseded) gives them back when it is collected.
const weightsOf = new FinalizationRegistry<tfl.Sequential>((model) => model.dispose());

/** A network of `hidden` layers with fresh weights (seeded), or `weights` when given. */
export function network(spec: Omit<Network, "model">, weights?: tf.Tensor[]): Network {
  const model = tfl.sequential();
  for (const [i, units] of spec.hidden.entries()) {
    const first = i === 0 ? { inputShape: [784] } : {};
    model.add(tfl.layers.dense({ units, activation: "relu", ...first, kernelInitializer: tfl.initializers.glorotUniform({ seed: spec.seed + i }) }));
  }
  model.add(
    tfl.layers.dense({
      units: 10,
      activation: "softmax",
      kernelInitializer: tfl.initializers.glorotUniform({ seed: spec.seed + spec.hidden.length }),
    }),
  );
  if (weights) model.setWeights(weights);
  const net = { ...spec, model };
  weightsOf.register(net, model);
  return net;
}

/** Each dense layer's kernel ([in, out], row-major) and bias, first layer first. */
export function denseLayers(net: Network): { kernel: Float32Array; bias: Float32Array; in: number; out: number }[] {
  const weights = net.model.getWeights();
  const layers = [];
  for (let i = 0; i < weights.length; i += 2) {
    const [inputs, outputs] = weights[i]!.shape as [number, number];
    layers.push({ kernel: weights[i]!.dataSync() as Float32Array, bias: weights[i + 1]!.dataSync() as Float32Array, in: inputs, out: outputs });
  }
  return layers;
}

interface Header extends Omit<Network, "model"> {
  shapes: number[][];
}

/** The network as bytes: uint32 header length, the header's JSON, the weights. */
export function encode(net: Network): Uint8Array {
  const weights = net.model.getWeights();
  const header: Header = {
    hidden: net.hidden,
    learningRate: net.learningRate,
    seed: net.seed,
    epochs: net.epochs,
    shapes: weights.map((w) => w.shape),
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const start = 4 + json.byteLength + ((4 - (json.byteLength % 4)) % 4); // floats aligned
  const sizes = weights.map((w) => w.size);
  const bytes = new Uint8Array(start + 4 * sizes.reduce((a, b) => a + b, 0));
  new DataView(bytes.buffer).setUint32(0, json.byteLength, true);
  bytes.set(json, 4);
  const floats = new Float32Array(bytes.buffer, start);
  let at = 0;
  for (const w of weights) {
    floats.set(w.dataSync() as Float32Array, at);
    at += w.size;
  }
  return bytes;
}

/** The network `encode` wrote. */
export function decode(bytes: Uint8Array): Network {
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  const { shapes, ...spec } = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + length))) as Header;
  const start = 4 + length + ((4 - (length % 4)) % 4);
  // A copy, aligned (not slice(): on a Node Buffer that is a view of its whole pool).
  const floats = new Float32Array(new Uint8Array(bytes.subarray(start)).buffer);
  let at = 0;
  const weights = shapes.map((shape) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const w = tf.tensor(floats.subarray(at, at + size), shape, "float32");
    at += size;
    return w;
  });
  try {
    return network(spec, weights);
  } finally {
    tf.dispose(weights);
  }
}

/** A copy that training can change while the original serves on. */
export function copy(net: Network): Network {
  return network(net, net.model.getWeights());
}
