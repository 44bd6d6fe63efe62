/**
 * The actions a server runs: each one's stop (an AbortController whose reason is a
 * CancelReason) and its end (a promise of the action as it ended). An action is entered
 * before its first store write, so that a cancel meanwhile finds it, and started once it
 * may run; its timeout counts from its creation. Both runners keep theirs here.
 */
import { CancelReason } from "./cancel-reason.ts";
import { isEnded, type LiveAction, type LiveTable } from "./live-table.ts";
import { elapsedMs } from "./requests.ts";

/** What an action that does not run waits for: its next attempt, or its model's lock. */
export type Waiting = "retry" | "model";

export interface Running {
  readonly controller: AbortController;
  /** Settles with the action as it ended (before retention may drop it). */
  readonly done: Promise<LiveAction>;
}

interface Entry extends Running {
  readonly end: (live: LiveAction) => void;
  timer?: ReturnType<typeof setTimeout>;
}

export class Runs {
  readonly #table: LiveTable;
  readonly #entries = new Map<string, Entry>();
  /** Resolved, each, once no action is entered here any more, or only ones waiting for their next attempt. */
  #idleWaiters: (() => void)[] = [];
  /** What the entered actions that do not run wait for. */
  readonly #waiting = new Map<string, Waiting>();

  constructor(table: LiveTable) {
    this.#table = table;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(id: string): boolean {
    return this.#entries.has(id);
  }

  get(id: string): Running | undefined {
    return this.#entries.get(id);
  }

  entries(): IterableIterator<[string, Running]> {
    return this.#entries.entries();
  }

  /** Enters an action that is about to run here: a cancel finds it from now on. */
  enter(id: string): Running {
    let end!: (live: LiveAction) => void;
    const done = new Promise<LiveAction>((resolve) => (end = resolve));
    const entry: Entry = { controller: new AbortController(), done, end };
    this.#entries.set(id, entry);
    return entry;
  }

  /**
   * Resolves once nothing runs on this server that could end without another's change:
   * every action entered here waits, for its next attempt or for its model (behind one that
   * waits). A stop leaves those waiting for a retry to the next start, or another server.
   */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** What the action waits for now: its next attempt ("retry"), its model's lock ("model"), or nothing (it runs). */
  waiting(id: string, what: Waiting | undefined): void {
    if (!this.#entries.has(id)) return;
    if (what) this.#waiting.set(id, what);
    else this.#waiting.delete(id);
    this.#wakeIfIdle();
  }

  /** Whether the action waits for its next attempt: it holds no child meanwhile. */
  waitsForRetry(id: string): boolean {
    return this.#waiting.get(id) === "retry";
  }

  #isIdle(): boolean {
    return this.#entries.size === this.#waiting.size;
  }

  #wakeIfIdle(): void {
    if (!this.#isIdle()) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #delete(id: string): void {
    this.#entries.delete(id);
    this.#waiting.delete(id);
    this.#wakeIfIdle();
  }

  /** Leaves an action that did not get to run (the store refused it): its waiters get it as it is. */
  leave(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    this.#delete(id);
    clearTimeout(entry.timer);
    const live = this.#table.action(id);
    if (live) entry.end(live);
  }

  /**
   * Runs an entered action: `work` until it ends, under the action's timeout (counted
   * from its creation). Resolves with `work`'s outcome, once the action has left.
   */
  async run<T extends { live: LiveAction }>(
    id: string,
    timeoutMs: number | undefined,
    work: (signal: AbortSignal, waiting: (what: Waiting | undefined) => void) => Promise<T>,
  ): Promise<T> {
    const entry = this.#entries.get(id)!;
    if (timeoutMs !== undefined) {
      const reason = new CancelReason("timeout", `the action did not end within its timeout of ${timeoutMs / 1000} s`);
      entry.timer = setTimeout(() => this.cancel(id, reason), Math.max(0, timeoutMs - elapsedMs(this.#table.action(id)!.view)));
      entry.timer.unref();
    }
    try {
      const outcome = await work(entry.controller.signal, (what) => this.waiting(id, what));
      entry.end(outcome.live);
      return outcome;
    } finally {
      clearTimeout(entry.timer);
      this.#delete(id);
      // Ended otherwise (a failure of the run itself): its waiters get it as the table has it.
      const live = this.#table.action(id);
      if (live) entry.end(live);
    }
  }

  /** Stops a running action (its signal aborts with the reason, in the phase it is in now); no-op once it ended. */
  cancel(id: string, reason: CancelReason): void {
    const entry = this.#entries.get(id);
    const live = this.#table.action(id);
    if (!entry || entry.controller.signal.aborted || !live || isEnded(live.view)) return;
    entry.controller.abort(reason.startingIn(live.view.status));
  }

  /** Stops every running action; resolves once all have ended. */
  async cancelAll(reason: CancelReason): Promise<void> {
    const ended = [...this.#entries.values()].map((e) => e.done);
    for (const id of [...this.#entries.keys()]) this.cancel(id, reason);
    await Promise.all(ended);
  }
}
