/**
 * The order of the calls on each model: one FIFO per model, in arrival order. A call
 * takes its model either exclusively (a fit, an update, a predict that may change the
 * instance: one at a time) or shared (a predict its model type declares concurrent: up to
 * `maxShared` at once). The head of the line goes first, and nothing overtakes it: a
 * change waits for the shared calls admitted before it, and the shared calls admitted
 * after it wait for the change, so they see its revision. A priority never overtakes in
 * a line: instead the calls holding a model wait for a child at the best priority of the
 * calls waiting behind them (waitingPriority), so an urgent call is not held up by the
 * backlog of another priority in front of its model's head.
 */
import { DEFAULT_PRIORITY } from "../process/fair-queue.ts";
import type { Permit } from "../slots.ts";

interface Waiter {
  /** Shared with at most this many holders; undefined: exclusive. */
  readonly maxShared: number | undefined;
  /** 1 (highest) to 5. */
  readonly priority: number;
  grant(): void;
}

interface Line {
  readonly waiting: Waiter[];
  shared: number;
  exclusive: boolean;
}

export class ModelLocks {
  readonly #lines = new Map<string, Line>();

  /**
   * Waits for the model in arrival order (exclusively, or shared with at most `maxShared`
   * holders); aborting `signal` first leaves the line with the signal's reason.
   * `onGranted` hears of the grant at once, as the holder before lets go.
   */
  async acquire(modelId: string, signal?: AbortSignal, maxShared?: number, priority = DEFAULT_PRIORITY, onGranted?: () => void): Promise<Permit> {
    signal?.throwIfAborted();
    let line = this.#lines.get(modelId);
    if (!line) {
      line = { waiting: [], shared: 0, exclusive: false };
      this.#lines.set(modelId, line);
    }
    const l = line;
    return new Promise<Permit>((resolve, reject) => {
      const onAbort = () => {
        const i = l.waiting.indexOf(waiter);
        if (i < 0) return;
        l.waiting.splice(i, 1);
        reject(signal?.reason);
        // The one that left may have held up those behind it.
        this.#grant(modelId, l);
      };
      const waiter: Waiter = {
        maxShared,
        priority,
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          onGranted?.();
          resolve(this.#permit(modelId, l, maxShared !== undefined));
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      l.waiting.push(waiter);
      this.#grant(modelId, l);
    });
  }

  /** Calls running or waiting on this model. */
  users(modelId: string): number {
    const line = this.#lines.get(modelId);
    if (!line) return 0;
    return line.waiting.length + line.shared + (line.exclusive ? 1 : 0);
  }

  /** The best (lowest) priority of the calls waiting on this model; undefined when none waits. */
  waitingPriority(modelId: string): number | undefined {
    let best: number | undefined;
    for (const w of this.#lines.get(modelId)?.waiting ?? []) if (best === undefined || w.priority < best) best = w.priority;
    return best;
  }

  /** A change (an exclusive call) waits on this model: the shared calls behind it cannot start before it. */
  changeWaiting(modelId: string): boolean {
    return this.#lines.get(modelId)?.waiting.some((w) => w.maxShared === undefined) ?? false;
  }

  /** Lets the head of the line in while it can go: nothing overtakes a waiter that cannot. */
  #grant(modelId: string, line: Line): void {
    for (;;) {
      const head = line.waiting[0];
      if (!head) break;
      const free = head.maxShared === undefined ? !line.exclusive && line.shared === 0 : !line.exclusive && line.shared < head.maxShared;
      if (!free) break;
      line.waiting.shift();
      if (head.maxShared === undefined) line.exclusive = true;
      else line.shared++;
      head.grant();
    }
    if (line.waiting.length === 0 && line.shared === 0 && !line.exclusive) this.#lines.delete(modelId);
  }

  #permit(modelId: string, line: Line, shared: boolean): Permit {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (shared) line.shared--;
      else line.exclusive = false;
      this.#grant(modelId, line);
    };
    return { release, [Symbol.dispose]: release };
  }
}
