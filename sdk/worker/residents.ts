/**
 * The instances a child keeps between calls (resident), keyed by model and revision and
 * bounded by their serialized size: a warm predict on a model the child holds needs no
 * instance bytes on the pipe and no deserialize. Least recently used go first; one
 * larger than the whole budget is never kept. Pure bookkeeping: thread.ts decides what
 * to keep, and reports each call's changes (deltas()) so the server's books follow.
 * @module
 */

/** A model's revision, as the protocol's ResidentRef names it. @internal */
export interface ResidentRef {
  modelId: string;
  revision: bigint;
}

/** What a call changed: the refs held before it and no longer, and those held now and not before. @internal */
export interface ResidentDeltas {
  dropped: ResidentRef[];
  kept: ResidentRef[];
}

/** The Failure name of a call that asked for an instance the child does not hold (the server sends it again with the bytes). @internal */
export const RESIDENT_MISSING = "ResidentMissing";

/** A call whose resident instance this child does not hold. @internal */
export class ResidentMissingError extends Error {
  constructor(ref: ResidentRef | undefined) {
    super(
      ref
        ? `model ${ref.modelId} revision ${ref.revision} is not resident in this child: send its instance`
        : "a resident call needs a model_id and a revision",
    );
    this.name = RESIDENT_MISSING;
  }
}

interface Entry<T> {
  ref: ResidentRef;
  size: number;
  value: T;
}

const keyOf = (ref: ResidentRef) => `${ref.revision}:${ref.modelId}`;

/**
 * Values (an instance, or the bytes to make one from) by ref, least recently used
 * first out, within `budgetBytes` of serialized size; 0 keeps nothing.
 * @internal
 */
export class Residents<T> {
  readonly budgetBytes: number;
  /** In order of use, least recent first (a Map keeps insertion order). */
  readonly #entries = new Map<string, Entry<T>>();
  #bytes = 0;
  /** Since the last deltas(): refs held before and gone now, and refs new since. */
  readonly #dropped = new Map<string, ResidentRef>();
  readonly #kept = new Map<string, ResidentRef>();

  constructor(budgetBytes: number) {
    this.budgetBytes = budgetBytes;
  }

  /** The serialized size of what is held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** What is held, least recently used first. */
  refs(): ResidentRef[] {
    return [...this.#entries.values()].map((e) => e.ref);
  }

  has(ref: ResidentRef): boolean {
    return this.#entries.has(keyOf(ref));
  }

  /** Whether an instance of `size` bytes would be kept. */
  fits(size: number): boolean {
    return this.budgetBytes > 0 && size <= this.budgetBytes;
  }

  /** The value held under `ref`, now the most recently used. */
  get(ref: ResidentRef): T | undefined {
    const key = keyOf(ref);
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  /** Takes the value out (a fit may change it in place): reported as dropped. */
  take(ref: ResidentRef): T | undefined {
    const key = keyOf(ref);
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#remove(key, entry, true);
    return entry.value;
  }

  /**
   * Keeps `value` under `ref` as the most recently used, in place of what it held there,
   * evicting the least recently used until it fits. Returns false, keeping nothing (and
   * no longer holding `ref`), when it is larger than the whole budget.
   */
  keep(ref: ResidentRef, size: number, value: T): boolean {
    const key = keyOf(ref);
    const old = this.#entries.get(key);
    if (old) this.#remove(key, old, true);
    if (!this.fits(size)) return false;
    this.makeRoom(size);
    this.#entries.set(key, { ref: { modelId: ref.modelId, revision: ref.revision }, size, value });
    this.#bytes += size;
    if (this.#dropped.has(key)) this.#dropped.delete(key);
    else this.#kept.set(key, { modelId: ref.modelId, revision: ref.revision });
    return true;
  }

  /**
   * Evicts the least recently used until `size` more bytes fit: before an instance that
   * will be kept is made, so that the child never holds the budget and the newcomer too.
   */
  makeRoom(size: number): void {
    if (!this.fits(size)) return;
    for (const [k, e] of this.#entries) {
      if (this.#bytes + size <= this.budgetBytes) break;
      this.#remove(k, e, true);
    }
  }

  /** Drops `refs` as the server asked (Forget): the server's books already say so, so no delta. */
  /** Lets go of these revisions; returns how many it held. */
  forget(refs: Iterable<ResidentRef>): number {
    let held = 0;
    for (const ref of refs) {
      const key = keyOf(ref);
      const entry = this.#entries.get(key);
      if (!entry) continue;
      this.#remove(key, entry, false);
      held++;
    }
    return held;
  }

  /** The changes since the last call of deltas(), for a call's Result or Failure. */
  deltas(): ResidentDeltas {
    const out = { dropped: [...this.#dropped.values()], kept: [...this.#kept.values()] };
    this.#dropped.clear();
    this.#kept.clear();
    return out;
  }

  #remove(key: string, entry: Entry<T>, report: boolean): void {
    this.#entries.delete(key);
    this.#bytes -= entry.size;
    if (!report) {
      this.#kept.delete(key);
      return;
    }
    if (this.#kept.has(key)) this.#kept.delete(key);
    else this.#dropped.set(key, entry.ref);
  }
}
