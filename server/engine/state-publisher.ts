/**
 * The publishing half of the live state: the revision, the ring of recent changes a
 * watcher resumes from (ChangeLog), and the listeners. On one server the live table
 * publishes its own changes here as it makes them (next revision); in a cluster the feed
 * does, with the database's revisions, in its commit order.
 */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { type Change, ChangeLog } from "./change-log.ts";

export type StateEvent =
  | { readonly revision: bigint; readonly kind: "model_upserted"; readonly model: Model }
  | { readonly revision: bigint; readonly kind: "model_deleted"; readonly modelId: string }
  | { readonly revision: bigint; readonly kind: "action_upserted"; readonly action: Action };

/** A change before it has a revision. */
export type StateChange =
  | { readonly kind: "model_upserted"; readonly model: Model }
  | { readonly kind: "model_deleted"; readonly modelId: string }
  | { readonly kind: "action_upserted"; readonly action: Action };

export class StatePublisher {
  readonly #log: ChangeLog;
  readonly #listeners = new Set<(event: StateEvent) => void>();

  constructor(stateHistory: number) {
    this.#log = new ChangeLog(stateHistory);
  }

  get revision(): bigint {
    return this.#log.revision;
  }

  /** Subscribers now: a disconnect must bring this back down. */
  get subscribers(): number {
    return this.#listeners.size;
  }

  /** Calls `listener` with every change from now on, synchronously; returns the unsubscribe. */
  subscribe(listener: (event: StateEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The latest change of each key after `revision`, or undefined when the ring does not reach back that far. */
  since(revision: bigint): Change[] | undefined {
    return this.#log.since(revision);
  }

  /** Starts from a revision the database gave (a cluster's snapshot). */
  reset(revision: bigint): void {
    this.#log.reset(revision);
  }

  /** Publishes a change under the next revision. */
  publish(change: StateChange): StateEvent {
    return this.record(this.#log.revision + 1n, change);
  }

  /** Publishes a change under the revision the database gave it (above the latest). */
  record(revision: bigint, change: StateChange): StateEvent {
    const [id, modelId] =
      change.kind === "action_upserted"
        ? [change.action.id, change.action.modelId]
        : change.kind === "model_upserted"
          ? [change.model.id, change.model.id]
          : [change.modelId, change.modelId];
    this.#log.record(revision, change.kind, id, modelId);
    const event = Object.freeze({ ...change, revision }) as StateEvent;
    for (const listener of this.#listeners) listener(event);
    return event;
  }
}
