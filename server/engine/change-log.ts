/**
 * The state's revisions and the ring of recent changes that lets a watcher resume.
 * The ring keeps what resume needs — each change's revision, kind and key — not the
 * changed objects, so it costs the same whatever the actions carried (~100 bytes an
 * entry).
 *
 * Revisions start at the server's start time in microseconds, so they rise across
 * restarts too: a revision from an earlier run is always older than anything held. In a
 * cluster they come from the database instead (record), with gaps: each server applies
 * the latest change of a key, not every step of it.
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
  /** Every change after this one is in the ring. */
  #floor = this.#revision;
  readonly #ring: (Change | undefined)[];
  #start = 0;
  #count = 0;

  constructor(size: number) {
    this.#ring = new Array(size);
  }

  get revision(): bigint {
    return this.#revision;
  }

  /** Starts from a revision the database gave (a cluster's snapshot): nothing before it is held. */
  reset(revision: bigint): void {
    this.#revision = revision;
    this.#floor = revision;
    this.#start = 0;
    this.#count = 0;
  }

  /** Records a change under the next revision and returns it. */
  append(kind: ChangeKind, id: string, modelId: string): Change {
    return this.record(this.#revision + 1n, kind, id, modelId);
  }

  /** Records a change under a revision given (above the latest). */
  record(revision: bigint, kind: ChangeKind, id: string, modelId: string): Change {
    const change: Change = { revision, kind, id, modelId };
    this.#revision = revision;
    const size = this.#ring.length;
    if (size === 0) this.#floor = revision;
    else {
      const slot = (this.#start + this.#count) % size;
      if (this.#count < size) this.#count++;
      else {
        this.#floor = this.#ring[slot]!.revision;
        this.#start = (this.#start + 1) % size;
      }
      this.#ring[slot] = change;
    }
    return change;
  }

  /**
   * The latest change of each key changed after `revision`, oldest first; undefined when
   * the ring no longer reaches back that far (or the revision is not one of this run's).
   */
  since(revision: bigint): Change[] | undefined {
    if (revision > this.#revision || revision < this.#floor) return undefined;
    const size = this.#ring.length;
    let first = this.#count;
    while (first > 0 && this.#ring[(this.#start + first - 1) % size]!.revision > revision) first--;
    const latest = new Map<string, Change>();
    for (let i = first; i < this.#count; i++) {
      const change = this.#ring[(this.#start + i) % size]!;
      const key = `${change.kind === "action_upserted" ? "a" : "m"}:${change.id}`;
      latest.delete(key);
      latest.set(key, change);
    }
    return [...latest.values()];
  }
}
