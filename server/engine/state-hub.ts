/**
 * The state revision and the stream of changes. Every change of a model or an
 * action raises the revision by one and reaches every subscriber synchronously.
 * The last `historySize` changes are kept so that a watcher can resume from a
 * revision it has seen.
 *
 * Revisions start at the server's start time in microseconds, so they rise across
 * restarts too: a revision from an earlier run is always older than anything held.
 */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";

export type StateChange =
  | { kind: "model_upserted"; model: Model }
  | { kind: "model_deleted"; modelId: string }
  | { kind: "action_upserted"; action: Action };

export type StateEvent = StateChange & { revision: bigint };

export class StateHub {
  #revision = BigInt(Date.now()) * 1000n;
  readonly #listeners = new Set<(event: StateEvent) => void>();
  /** A ring of the latest events, oldest at #start. */
  readonly #history: (StateEvent | undefined)[];
  #start = 0;
  #count = 0;

  constructor(historySize = 10_000) {
    this.#history = new Array(historySize);
  }

  get revision(): bigint {
    return this.#revision;
  }

  /** Subscribers now: a disconnect must bring this back down. */
  get subscribers(): number {
    return this.#listeners.size;
  }

  publish(change: StateChange): bigint {
    this.#revision++;
    const event = { ...change, revision: this.#revision } as StateEvent;
    const size = this.#history.length;
    if (size > 0) {
      this.#history[(this.#start + this.#count) % size] = event;
      if (this.#count < size) this.#count++;
      else this.#start = (this.#start + 1) % size;
    }
    for (const listener of this.#listeners) listener(event);
    return this.#revision;
  }

  /**
   * The events after `revision`, oldest first; undefined when they are no longer all
   * held (or the revision is not one of this run's).
   */
  since(revision: bigint): StateEvent[] | undefined {
    if (revision > this.#revision) return undefined;
    const missed = Number(this.#revision - revision);
    if (missed > this.#count) return undefined;
    const size = this.#history.length;
    const out: StateEvent[] = [];
    for (let i = this.#count - missed; i < this.#count; i++) out.push(this.#history[(this.#start + i) % size]!);
    return out;
  }

  subscribe(listener: (event: StateEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
