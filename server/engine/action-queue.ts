/**
 * The queued actions, in the order they became queued: bounded by engine.max_queue,
 * and the source of each queued action's queue_position.
 */
import { PlinthError } from "../errors.ts";

export class ActionQueue {
  readonly limit: number;
  /** Map order is insertion order: the queue order. */
  readonly #ids = new Set<string>();

  constructor(limit: number) {
    this.limit = limit;
  }

  get size(): number {
    return this.#ids.size;
  }

  /** Throws RESOURCE_EXHAUSTED when one more action would not fit. */
  admit(): void {
    if (this.#ids.size >= this.limit) {
      throw new PlinthError(
        "queue_full",
        `the queue is full: ${this.#ids.size} actions are waiting and engine.max_queue is ${this.limit}; retry later`,
      );
    }
  }

  enter(id: string): void {
    this.#ids.delete(id);
    this.#ids.add(id);
  }

  leave(id: string): void {
    this.#ids.delete(id);
  }

  /** 1 for the oldest queued action; 0 when the action is not queued. */
  position(id: string): number {
    if (!this.#ids.has(id)) return 0;
    let position = 1;
    for (const other of this.#ids) {
      if (other === id) return position;
      position++;
    }
    return 0;
  }
}
