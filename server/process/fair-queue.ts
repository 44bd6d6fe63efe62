/**
 * The order calls wait in for a child: the highest priority first (1 before 5); within a
 * priority, callers take turns (one caller's thousand calls do not starve another's
 * one), each caller's oldest first.
 *
 * Turns are start-time fair queuing with equal weights: a call's turn is one after its
 * caller's previous call still counted at that priority, but never earlier than the
 * turn last taken there. A caller that comes late starts at the current turn instead of
 * catching up on the turns it missed; ties go to the older call. An order given as a
 * function is read again at each pick: a waiter whose priority changes (a batch that an
 * urgent item joined) takes its place there as if it came now, its age kept for ties.
 */

/** Where a call stands: its priority (1 highest … 5) and who made it (Caller.name). */
export interface QueueOrder {
  priority: number;
  caller: string;
}

/** The priority of a call that set none. */
export const DEFAULT_PRIORITY = 3;
export const MIN_PRIORITY = 1;
export const MAX_PRIORITY = 5;

/** A waiter's order: fixed, or read at each pick. */
export type OrderOf = QueueOrder | (() => QueueOrder);

interface Entry<T> {
  readonly value: T;
  readonly order: OrderOf;
  priority: number;
  caller: string;
  turn: number;
  readonly seq: number;
}

const DEFAULT_ORDER: QueueOrder = { priority: DEFAULT_PRIORITY, caller: "" };

export class FairQueue<T> {
  #entries: Entry<T>[] = [];
  #seq = 0;
  /** Per priority: the turn of the call taken last. */
  readonly #served = new Map<number, number>();
  /** Per priority and caller: the turn of its latest call. */
  readonly #last = new Map<string, number>();

  get length(): number {
    return this.#entries.length;
  }

  push(value: T, order: OrderOf = DEFAULT_ORDER): void {
    const entry: Entry<T> = { value, order, priority: 0, caller: "", turn: 0, seq: this.#seq++ };
    this.#place(entry, typeof order === "function" ? order() : order);
    this.#entries.push(entry);
  }

  /** Gives the entry its turn at its priority: one after its caller's latest there, never before the turn served. */
  #place(entry: Entry<T>, { priority, caller }: QueueOrder): void {
    const key = `${priority}\0${caller}`;
    const turn = Math.max(this.#served.get(priority) ?? 0, (this.#last.get(key) ?? 0) + 1);
    this.#last.set(key, turn);
    Object.assign(entry, { priority, caller, turn });
  }

  /** The next to go, without taking it. */
  peek(): T | undefined {
    return this.#entries[this.#best()]?.value;
  }

  /** Takes the next to go. */
  shift(): T | undefined {
    const i = this.#best();
    const entry = this.#entries[i];
    if (!entry) return undefined;
    this.#entries.splice(i, 1);
    this.#served.set(entry.priority, Math.max(this.#served.get(entry.priority) ?? 0, entry.turn));
    // A caller with nothing left ahead of the turn starts afresh next time.
    const key = `${entry.priority}\0${entry.caller}`;
    if ((this.#last.get(key) ?? 0) <= entry.turn) this.#last.delete(key);
    return entry.value;
  }

  /** Takes a value out wherever it stands (a waiter that gave up); false if it was not there. */
  remove(value: T): boolean {
    const i = this.#entries.findIndex((e) => e.value === value);
    if (i < 0) return false;
    this.#entries.splice(i, 1);
    return true;
  }

  /** Empties the queue, returning what it held. */
  clear(): T[] {
    const values = this.#entries.map((e) => e.value);
    this.#entries = [];
    this.#served.clear();
    this.#last.clear();
    return values;
  }

  /** A linear scan: the queue is bounded by engine.max_queue, and a call takes one child at a time. */
  #best(): number {
    let best = -1;
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i]!;
      if (typeof e.order === "function") {
        const now = e.order();
        if (now.priority !== e.priority || now.caller !== e.caller) this.#place(e, now);
      }
      const b = this.#entries[best];
      if (!b || e.priority < b.priority || (e.priority === b.priority && (e.turn < b.turn || (e.turn === b.turn && e.seq < b.seq)))) best = i;
    }
    return best;
  }
}
