/**
 * The state revision and the stream of changes. Every change of a model or an
 * action raises the revision by one and reaches every subscriber synchronously.
 */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";

export type StateChange =
  | { kind: "model_upserted"; model: Model }
  | { kind: "model_deleted"; modelId: string }
  | { kind: "action_upserted"; action: Action };

export type StateEvent = StateChange & { revision: bigint };

export class StateHub {
  #revision = 0n;
  readonly #listeners = new Set<(event: StateEvent) => void>();

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
    for (const listener of this.#listeners) listener(event);
    return this.#revision;
  }

  subscribe(listener: (event: StateEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
