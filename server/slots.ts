/**
 * A counting semaphore with a FIFO queue: at most `size` permits out at once.
 * Waiting is abortable; a permit is Disposable so `using` releases it on every path.
 */
import { PlinthError } from "./errors.ts";

export interface Permit extends Disposable {
  release(): void;
}

interface Waiter {
  resolve(permit: Permit): void;
  reject(reason: unknown): void;
}

export class Slots {
  readonly size: number;
  #out = 0;
  #queue: Waiter[] = [];
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
    return new Promise<Permit>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        resolve: (permit) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(permit);
        },
        reject: (reason) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
    });
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
