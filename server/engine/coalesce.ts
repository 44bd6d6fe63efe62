/**
 * A stream of updates where a slow reader gets the latest value per key instead of
 * every intermediate one: memory is bounded by the number of keys, and by `maxBytes`
 * — a reader further behind than that loses what was pending and is told to resync
 * (it reads a fresh snapshot instead). Values come out in the order of their latest
 * update. It subscribes when created, so a caller can read a snapshot right after and
 * miss nothing; iterating to the end, close() or an abort of any of `signals`
 * unsubscribes, and every listener it added goes with it.
 */

/** Yielded instead of a value when the reader fell more than maxBytes behind. */
export const RESYNC = Symbol("resync");

export class Coalesced<T> implements AsyncIterable<T | typeof RESYNC> {
  readonly #pending = new Map<string, { value: T; bytes: number }>();
  readonly #signals: AbortSignal[];
  readonly #unsubscribe: () => void;
  readonly #maxBytes: number;
  #bytes = 0;
  #resync = false;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(subscribe: (push: (key: string, value: T, bytes?: number) => void) => () => void, signals: AbortSignal[], maxBytes = Infinity) {
    this.#signals = signals;
    this.#maxBytes = maxBytes;
    this.#unsubscribe = subscribe((key, value, bytes = 0) => {
      const previous = this.#pending.get(key);
      if (previous) {
        this.#bytes -= previous.bytes;
        this.#pending.delete(key);
      }
      this.#pending.set(key, { value, bytes });
      this.#bytes += bytes;
      if (this.#bytes > this.#maxBytes) {
        this.#pending.clear();
        this.#bytes = 0;
        this.#resync = true;
      }
      this.#wake?.();
    });
    for (const signal of signals) signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Values waiting to be read, and their bytes. */
  get pending(): { count: number; bytes: number } {
    return { count: this.#pending.size, bytes: this.#bytes };
  }

  get #aborted(): boolean {
    return this.#signals.some((s) => s.aborted);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe();
    for (const signal of this.#signals) signal.removeEventListener("abort", this.#onAbort);
    this.#pending.clear();
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T | typeof RESYNC, void> {
    try {
      while (!this.#closed && !this.#aborted) {
        if (this.#resync) {
          this.#resync = false;
          yield RESYNC;
          continue;
        }
        const next = this.#pending.entries().next();
        if (next.done) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
          this.#wake = undefined;
          continue;
        }
        this.#pending.delete(next.value[0]);
        this.#bytes -= next.value[1].bytes;
        yield next.value[1].value;
      }
    } finally {
      this.close();
    }
  }

  readonly #onAbort = () => this.#wake?.();
}
