/**
 * Calls `fn` at most once per `intervalMs`: the first call at once, later ones
 * coalesced into one trailing call. A flood of progress reports costs a bounded rate
 * of state revisions and no memory beyond the latest state.
 */
export class Throttle {
  readonly #fn: () => void;
  readonly #intervalMs: number;
  #last = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(fn: () => void, intervalMs: number) {
    this.#fn = fn;
    this.#intervalMs = intervalMs;
  }

  request(): void {
    if (this.#timer) return;
    const wait = this.#last + this.#intervalMs - performance.now();
    if (wait <= 0) this.#run();
    else this.#timer = setTimeout(() => this.#run(), wait);
  }

  /** Drops a pending call. */
  cancel(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #run(): void {
    this.#timer = undefined;
    this.#last = performance.now();
    this.#fn();
  }
}
