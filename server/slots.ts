/**
 * A counting semaphore with a FIFO queue: at most `size` permits out at once.
 * Waiting is abortable; a permit is Disposable so `using` releases it on every path.
 */
import { PlinthError } from "./errors.ts";
import { type Settle, waitInQueue } from "./wait-in-queue.ts";

export interface Permit extends Disposable {
  release(): void;
}

export class Slots {
  readonly size: number;
  #out = 0;
  #queue: Settle<Permit>[] = [];
  #closed: Error | undefined;

  constructor(size: number) {
    this.size = size;
  }

  /** Permits currently held. */
  get inUse(): number {
    return this.#out;
  }

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.#queue.length;
  }

  acquire(signal?: AbortSignal): Promise<Permit> {
    signal?.throwIfAborted();
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#out < this.size && this.#queue.length === 0) {
      this.#out++;
      return Promise.resolve(this.#permit());
    }
    return waitInQueue<Permit, Settle<Permit>>(this.#queue, signal, {});
  }

  /** Rejects every waiter and every later acquire. Permits out stay valid. */
  close(): void {
    this.#closed ??= new PlinthError("shutting_down", "the server is shutting down");
    for (const waiter of this.#queue.splice(0)) waiter.reject(this.#closed);
  }

  #permit(): Permit {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      // Hand the permit straight to the next waiter so the count never dips and refills.
      if (next) next.resolve(this.#permit());
      else this.#out--;
    };
    return { release, [Symbol.dispose]: release };
  }
}
