/**
 * A stream of updates where a slow reader gets the latest value per key instead of
 * every intermediate one: memory is bounded by the number of keys, not by how far
 * behind the reader is. Values come out in the order of their latest update.
 * It subscribes when created, so a caller can read a snapshot right after and miss
 * nothing; iterating to the end, or close(), unsubscribes.
 */
export class Coalesced<T> implements AsyncIterable<T> {
  readonly #pending = new Map<string, T>();
  readonly #signal: AbortSignal;
  readonly #unsubscribe: () => void;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(subscribe: (push: (key: string, value: T) => void) => () => void, signal: AbortSignal) {
    this.#signal = signal;
    this.#unsubscribe = subscribe((key, value) => {
      this.#pending.delete(key);
      this.#pending.set(key, value);
      this.#wake?.();
    });
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Values waiting to be read. */
  get pending(): number {
    return this.#pending.size;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    this.#signal.removeEventListener("abort", this.#onAbort);
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void> {
    try {
      while (!this.#closed && !this.#signal.aborted) {
        const next = this.#pending.entries().next();
        if (next.done) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
          this.#wake = undefined;
          continue;
        }
        this.#pending.delete(next.value[0]);
        yield next.value[1];
      }
    } finally {
      this.close();
    }
  }

  readonly #onAbort = () => this.#wake?.();
}
