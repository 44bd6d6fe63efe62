/**
 * The state's revisions and the ring of recent changes that lets a watcher resume.
 * The ring keeps what resume needs — each change's revision, kind and key — not the
 * changed objects, so it costs the same whatever the actions carried (~100 bytes an
 * entry).
 *
 * Revisions start at the server's start time in microseconds, so they rise across
 * restarts too: a revision from an earlier run is always older than anything held.
 */

export type ChangeKind = "model_upserted" | "model_deleted" | "action_upserted";

export interface Change {
  readonly revision: bigint;
  readonly kind: ChangeKind;
  /** The model's or the action's id. */
  readonly id: string;
  /** The model the change concerns: the model itself, or the action's model ("" before create_instance made one). */
  readonly modelId: string;
}

export class ChangeLog {
  #revision = BigInt(Date.now()) * 1000n;
  readonly #ring: (Change | undefined)[];
  #start = 0;
  #count = 0;

  constructor(size: number) {
    this.#ring = new Array(size);
  }

  get revision(): bigint {
    return this.#revision;
  }

  /** Records a change under the next revision and returns it. */
  append(kind: ChangeKind, id: string, modelId: string): Change {
    const change: Change = { revision: ++this.#revision, kind, id, modelId };
    const size = this.#ring.length;
    if (size > 0) {
      this.#ring[(this.#start + this.#count) % size] = change;
      if (this.#count < size) this.#count++;
      else this.#start = (this.#start + 1) % size;
    }
    return change;
  }

  /**
   * The latest change of each key changed after `revision`, oldest first; undefined when
   * the ring no longer reaches back that far (or the revision is not one of this run's).
   */
  since(revision: bigint): Change[] | undefined {
    if (revision > this.#revision) return undefined;
    const missed = Number(this.#revision - revision);
    if (missed > this.#count) return undefined;
    const size = this.#ring.length;
    const latest = new Map<string, Change>();
    for (let i = this.#count - missed; i < this.#count; i++) {
      const change = this.#ring[(this.#start + i) % size]!;
      const key = `${change.kind === "action_upserted" ? "a" : "m"}:${change.id}`;
      latest.delete(key);
      latest.set(key, change);
    }
    return [...latest.values()];
  }
}
