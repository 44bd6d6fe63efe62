/**
 * Predicting digits for many requests at once: their images go through the network as
 * one tensor, and each request gets its own rows back.
 * @module
 */
import { type PluginValue, Tensor } from "../../sdk/mod.ts";
import { PIXELS } from "./digits.ts";
import { type Network, tf } from "./network.ts";

export interface DigitsRequest {
  /** [n, 784] row-major. */
  images: Float32Array;
  /** Also each digit's probabilities, [n, 10]. */
  probabilities: boolean;
}

/** Each request's digits (an int32 tensor [n]), or `{digits, probabilities}` when it asks. */
export function classify(net: Network, requests: readonly DigitsRequest[]): PluginValue[] {
  const total = requests.reduce((n, r) => n + r.images.length / PIXELS, 0);
  const all = new Float32Array(total * PIXELS);
  let offset = 0;
  for (const r of requests) {
    all.set(r.images, offset);
    offset += r.images.length;
  }
  const [probabilities, digits] = tf.tidy(() => {
    const p = net.model.predict(tf.tensor2d(all, [total, PIXELS])) as tf.Tensor2D;
    return [p.dataSync() as Float32Array, tf.argMax(p, 1).dataSync() as Int32Array];
  });
  let at = 0;
  return requests.map((r) => {
    const n = r.images.length / PIXELS;
    const mine = new Tensor("int32", [n], digits.slice(at, at + n));
    const p = r.probabilities ? new Tensor("float32", [n, 10], probabilities.slice(at * 10, (at + n) * 10)) : undefined;
    at += n;
    return p ? { digits: mine, probabilities: p } : mine;
  });
}
