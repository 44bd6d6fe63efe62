/**
 * A hint to collect garbage once a large frame is done with. An instance sent as bytes
 * leaves its frame behind (tens of MB for a large model) outside the JavaScript heap,
 * where V8 counts it only loosely, so a child serving models in turn would hold several
 * dead frames beside the instances it keeps. The server starts children with the
 * collector exposed (`--expose-gc`); elsewhere (testPlugin, a plugin's own tests) this
 * does nothing.
 * @module
 */

/** Frames (or instances let go of) at least this large are worth a collection. @internal */
export const GC_HINT_BYTES = 4 * 2 ** 20;

/** Collects now: before a large allocation, what was just let go of makes room for it. @internal */
export function collectNow(): void {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc === "function") gc();
}

/** Collects soon, off the path of what runs now. @internal */
export function collectSoon(): void {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc === "function") setTimeout(() => gc(), 0);
}
