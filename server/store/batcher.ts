/**
 * The group commit of action changes, shared by the SQLite and PostgreSQL stores: the
 * changes of one turn of the event loop go to the database in one commit (and two
 * changes of one action in that turn in one write: the latest, with the payloads of
 * both); each caller learns whether its own change was committed.
 *
 * A store's commit may be synchronous (SQLite): then a flush has committed by the time it
 * returns, so a store can flush and write in one step with nothing in between. One that
 * is asynchronous (PostgreSQL) commits one batch at a time, in order.
 *
 * A change that lingers (a call's start, which nobody waits for) is not written at the
 * end of its turn: it waits up to the time given for a later change of its action, which
 * takes its place — a short call's start and end are one write, not two. Reads flush
 * first, so no read misses it.
 */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { mergePayloads } from "./records.ts";
import type { StoredPayloads } from "./store.ts";

/** An action's latest change waiting for the commit. */
export interface ActionWrite {
  action: Action;
  payloads?: StoredPayloads | undefined;
  /** PostgreSQL: a new action this server would run at once, if its model is free. */
  claim: boolean;
}

/**
 * What a commit answers for its writes, by action id (PostgreSQL: the model's revision
 * for each action this server claimed); nothing when it has nothing to say.
 */
export type Answers<R> = ReadonlyMap<string, R> | undefined;

export interface BatcherOptions<R> {
  /** Commits the writes in one transaction, in their order; throws (or rejects) when it was not made. */
  commit(writes: ActionWrite[]): Answers<R> | Promise<Answers<R>>;
  /**
   * Whether a batch that failed with this error is tried again one write at a time, so
   * that only the writes that fail alone fail (not when the database itself is gone).
   */
  split?(error: unknown): boolean;
  /** Told how long each whole batch took to commit: for metrics. */
  onCommit?: ((seconds: number) => void) | undefined;
}

interface Pending<R> extends ActionWrite {
  /** Everyone waiting for this action's latest change to be committed. */
  settle: { resolve(answer: R | undefined): void; reject(error: unknown): void }[];
  /** When it is written at the latest (Date.now()), if it lingers; undefined: at the end of this turn. */
  due: number | undefined;
}

type Step = undefined | Promise<void>;

export class Batcher<R = never> {
  readonly #o: BatcherOptions<R>;
  /** One write per action, in the order of their latest change. */
  readonly #pending = new Map<string, Pending<R>>();
  #timer: ReturnType<typeof setImmediate> | undefined;
  /** Writes the changes that linger once the first of them is due (at #lingerDue). */
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #lingerDue = Number.POSITIVE_INFINITY;
  /** The asynchronous commit under way, if any: the next one starts after it. */
  #busy: Promise<void> | undefined;

  constructor(options: BatcherOptions<R>) {
    this.#o = options;
  }

  /**
   * Adds a change to this turn's commit (lingering up to `lingerMs` for a later one: see
   * above); resolves once it is committed, with the commit's answer for it.
   */
  add(action: Action, payloads?: StoredPayloads, claim = false, lingerMs = 0): Promise<R | undefined> {
    const previous = this.#pending.get(action.id);
    // A change due at the end of this turn stays due (someone waits for it); one that
    // lingers is due when the first of its action's pending changes says.
    const lingers = lingerMs > 0 && !claim && (previous === undefined || previous.due !== undefined);
    const due = lingers ? Math.min(Date.now() + lingerMs, previous?.due ?? Number.POSITIVE_INFINITY) : undefined;
    const write: Pending<R> = {
      action,
      payloads: mergePayloads(previous?.payloads, payloads),
      claim: claim || (previous?.claim ?? false),
      settle: previous?.settle ?? [],
      due,
    };
    const committed = new Promise<R | undefined>((resolve, reject) => write.settle.push({ resolve, reject }));
    // The latest change goes last: the commit writes the actions in the order they last changed.
    this.#pending.delete(action.id);
    this.#pending.set(action.id, write);
    if (due === undefined) this.#timer ??= setImmediate(() => this.#writeDue(Number.NEGATIVE_INFINITY));
    else if (due < this.#lingerDue) this.#armLinger(due);
    return committed;
  }

  #armLinger(due: number): void {
    clearTimeout(this.#lingerTimer);
    this.#lingerDue = due;
    this.#lingerTimer = setTimeout(
      () => {
        this.#lingerTimer = undefined;
        this.#lingerDue = Number.POSITIVE_INFINITY;
        this.#writeDue(due);
      },
      Math.max(0, due - Date.now()),
    );
    this.#lingerTimer.unref();
  }

  /** Commits the changes due at the end of this turn, and those lingering until `until` or before. */
  #writeDue(until: number): void {
    if (until === Number.NEGATIVE_INFINITY) this.#timer = undefined;
    const writes: Pending<R>[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const [id, write] of this.#pending) {
      if (write.due !== undefined && write.due > until) {
        next = Math.min(next, write.due);
        continue;
      }
      writes.push(write);
      this.#pending.delete(id);
    }
    if (next < this.#lingerDue) this.#armLinger(next);
    this.#start(writes);
  }

  /**
   * Commits what is pending now, after the commit under way; resolves when both are done
   * (never rejects: each write's caller hears of its failure). Reads call it first so
   * that they see every change made before them.
   */
  flush(): Promise<void> {
    clearImmediate(this.#timer);
    clearTimeout(this.#lingerTimer);
    this.#timer = undefined;
    this.#lingerTimer = undefined;
    this.#lingerDue = Number.POSITIVE_INFINITY;
    const writes = [...this.#pending.values()];
    this.#pending.clear();
    this.#start(writes);
    return this.#busy ?? Promise.resolve();
  }

  /** Commits `writes` after the commit under way. */
  #start(writes: Pending<R>[]): void {
    if (writes.length === 0) return;
    const step = this.#busy !== undefined ? this.#busy.then(() => this.#commit(writes)) : this.#commit(writes);
    if (step !== undefined) {
      const tracked: Promise<void> = step.then(() => {
        if (this.#busy === tracked) this.#busy = undefined;
      });
      this.#busy = tracked;
    }
  }

  #commit(writes: Pending<R>[]): Step {
    const started = performance.now();
    return attempt(
      () => this.#o.commit(writes),
      (answers) => {
        this.#o.onCommit?.((performance.now() - started) / 1000);
        for (const w of writes) for (const s of w.settle) s.resolve(answers?.get(w.action.id));
      },
      (error) => {
        if (writes.length > 1 && (this.#o.split?.(error) ?? true)) return this.#alone(writes, 0);
        for (const w of writes) for (const s of w.settle) s.reject(error);
        return undefined;
      },
    );
  }

  /** Which one failed? Each on its own, from `from` on. */
  #alone(writes: Pending<R>[], from: number): Step {
    for (let i = from; i < writes.length; i++) {
      const w = writes[i]!;
      const step = attempt(
        () => this.#o.commit([w]),
        (answers) => {
          for (const s of w.settle) s.resolve(answers?.get(w.action.id));
        },
        (error) => {
          for (const s of w.settle) s.reject(error);
          return undefined;
        },
      );
      if (step !== undefined) return step.then(() => this.#alone(writes, i + 1));
    }
    return undefined;
  }
}

/** Runs `run`, then `ok` or `failed`: at once when `run` is synchronous, else when it settles. */
function attempt<T>(run: () => T | Promise<T>, ok: (value: T) => void, failed: (error: unknown) => Step): Step {
  let value: T | Promise<T>;
  try {
    value = run();
  } catch (error) {
    return failed(error);
  }
  if (!(value instanceof Promise)) {
    ok(value);
    return undefined;
  }
  return value.then(ok, failed);
}
