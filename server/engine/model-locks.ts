/** One FIFO lock per model: calls on one model run one at a time, in arrival order. */
import { type Permit, Slots } from "../slots.ts";

export class ModelLocks {
  readonly #locks = new Map<string, { slots: Slots; users: number }>();

  async acquire(modelId: string, signal?: AbortSignal): Promise<Permit> {
    let entry = this.#locks.get(modelId);
    if (!entry) {
      entry = { slots: new Slots(1), users: 0 };
      this.#locks.set(modelId, entry);
    }
    entry.users++;
    const done = () => {
      if (--entry.users === 0) this.#locks.delete(modelId);
    };
    try {
      const permit = await entry.slots.acquire(signal);
      const release = () => {
        permit.release();
        done();
      };
      let released = false;
      const once = () => {
        if (!released) {
          released = true;
          release();
        }
      };
      return { release: once, [Symbol.dispose]: once };
    } catch (error) {
      done();
      throw error;
    }
  }

  /** Calls running or waiting on this model. */
  users(modelId: string): number {
    return this.#locks.get(modelId)?.users ?? 0;
  }
}
