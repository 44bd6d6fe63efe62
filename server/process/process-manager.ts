/**
 * Runs plugin calls in child processes. Never more than maxChildren children alive at
 * once — starting, busy, idle or stopping, handshakes and data-access sub-calls
 * included — and the calls beyond that wait in one FIFO queue.
 *
 * A child that answered its call cleanly goes back to an idle pool for its plugin
 * module and serves the next call without a new spawn (a spawn costs 0.1–1.5 s, a
 * call on a warm child well under a millisecond). A child that failed, was cancelled
 * or broke the protocol is never reused. Idle children give up their slot to a
 * waiting call for another module.
 *
 * Knows nothing of gRPC or of models: a call goes in, a result or a ChildFailure
 * comes out.
 */
import { EventEmitter } from "node:events";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import type { CallKind, Hello, Result, Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError } from "../errors.ts";
import { type Settle, waitInQueue } from "../wait-in-queue.ts";
import { type ChildExit, ChildFailure, type ChildOptions, PluginChild } from "./child.ts";
import { formatHint } from "./format-hint.ts";
import { childCommand, type PluginTarget, permissionHint } from "./runtimes.ts";

export interface ProcessManagerOptions {
  maxChildren: number;
  sigtermTimeoutMs: number;
  checkChildrenPeriodMs: number;
  maxFrameBytes: number;
  logTailLines: number;
  /** Deno's cache directory for deno children. */
  denoDir: string;
  /** Minimum time between two progress frames of one call, in the child. */
  progressIntervalMs: number;
  /** Keep children that answered cleanly for the next call. */
  reuseWorkers: boolean;
  /** A child is retired after this many calls. */
  maxCallsPerWorker: number;
  /** An idle child beyond minIdleWorkers is retired after this long. */
  idleWorkerTimeoutMs: number;
  /** Idle children kept ready per plugin module, when slots are free. */
  minIdleWorkers: number;
  /** Marks this server's children (PLINTH_CHILD=<owner>.<n>): the store's id and this run's. */
  owner: string;
  /** The deno binary; default: the one the npm package `deno` installed. */
  denoBinary?: string | undefined;
  /** What clients see of paths is relative to this folder (the config's). */
  displayBase?: string | undefined;
  logger: Logger;
  /** Starts a child; default: a PluginChild running the target's command (the fast tests give stand-ins). */
  launch?: ChildLauncher | undefined;
}

/** What the manager uses of a child process. */
export type ChildHandle = Pick<
  PluginChild,
  "pid" | "tail" | "exited" | "exit" | "stopping" | "suspended" | "hello" | "call" | "endCall" | "terminate" | "kill" | "reconcile"
>;

export type ChildLauncher = (target: PluginTarget, options: Omit<ChildOptions, "command">) => ChildHandle;

export interface CallOptions {
  /** Aborting it cancels the call: dequeued at once if waiting, else SIGTERM then SIGKILL. */
  signal?: AbortSignal;
  /** The call has a child (it may have waited for a slot until now). */
  onStart?: (pid: number) => void;
  /** The plugin's latest report, with what it printed so far during this call. */
  onProgress?: (state: JsonValuePb | undefined, logTail: string[]) => void;
}

/** A call to make in a child; the manager assigns its call id. */
export interface PluginCall {
  kind: CallKind;
  target: string;
  instance?: Uint8Array;
  args: Value[];
  kwargs: Record<string, Value>;
}

export interface CallOutcome {
  result: Result;
  logTail: string[];
  /** The child had served calls before this one. */
  warm: boolean;
}

interface Worker {
  readonly key: string;
  readonly target: PluginTarget;
  readonly child: ChildHandle;
  /** Settles with the hello once the plugin module has loaded. */
  readonly ready: Promise<Hello>;
  /** Set once the plugin has said hello. */
  hello?: Hello;
  calls: number;
  idleSince: number;
}

interface Waiter extends Settle<Worker> {
  key: string;
  target: PluginTarget;
}

const keyOf = (t: PluginTarget) =>
  `${t.runtime}\0${t.module}\0${JSON.stringify(t.permissions ?? {})}\0${t.maxMemoryMb ?? ""}\0${t.env ?? ""}\0${t.generation ?? 0}`;

/** What the manager reports as it goes: for metrics, logs and tests. */
export interface ProcessEvents {
  spawn: [pid: number];
  exit: [pid: number, exit: ChildExit];
}

export class ProcessManager {
  /** "spawn" and "exit" of every child. */
  readonly events = new EventEmitter<ProcessEvents>();
  readonly #o: ProcessManagerOptions;
  readonly #workers = new Set<Worker>();
  /** Idle workers per module, most recently used last. */
  readonly #idle = new Map<string, Worker[]>();
  readonly #queue: Waiter[] = [];
  /** Workers asked to stop whose slot is not free yet. */
  readonly #stopping = new Set<Worker>();
  /** Every module that has answered a call, to keep minIdleWorkers ready. */
  readonly #targets = new Map<string, PluginTarget>();
  /** Modules whose last start failed: not prewarmed, or a broken module would respawn forever. */
  readonly #failing = new Set<string>();
  /** Modules whose code was reloaded: their children stop once their call ends. */
  readonly #retired = new Set<string>();
  readonly #timer: ReturnType<typeof setInterval>;
  #nextCallId = 1;
  #nextChild = 1;
  #closed = false;
  /** Stopping: no idle child is started any more. */
  #draining = false;

  constructor(options: ProcessManagerOptions) {
    this.#o = options;
    this.#timer = setInterval(() => this.#maintain(), options.checkChildrenPeriodMs);
    this.#timer.unref();
  }

  /** Children alive now: starting, busy, idle or stopping. */
  get live(): number {
    return this.#workers.size;
  }

  /** Idle children ready for a call. */
  get idle(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Children by what they do now: for metrics. */
  counts(): { live: number; idle: number; starting: number; busy: number } {
    const live = this.#workers.size;
    const idle = this.idle;
    let starting = 0;
    for (const worker of this.#workers) if (!worker.hello) starting++;
    return { live, idle, starting, busy: Math.max(0, live - idle - starting - this.#stopping.size) };
  }

  /** Calls waiting for a child. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Pids of the children alive now. */
  pids(): number[] {
    return [...this.#workers].map((w) => w.child.pid);
  }

  /** Starts the plugin module (or takes an idle child of it) and reads its manifest. */
  async describe(target: PluginTarget, signal?: AbortSignal): Promise<Hello> {
    const worker = await this.#lease(target, signal);
    try {
      const hello = await worker.ready;
      this.#release(worker, true);
      return hello;
    } catch (error) {
      this.#release(worker, false);
      await worker.child.exited;
      throw this.#withTail(error, worker);
    }
  }

  /** Runs one call. Rejects with ChildFailure, or with the signal's reason if cancelled while queued. */
  async call(target: PluginTarget, call: PluginCall, options: CallOptions = {}): Promise<CallOutcome> {
    const { signal } = options;
    const worker = await this.#lease(target, signal);
    const onAbort = () => void worker.child.terminate(this.#o.sigtermTimeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (signal?.aborted) onAbort();
      options.onStart?.(worker.child.pid);
      await worker.ready;
      const warm = worker.calls > 0;
      worker.calls++;
      worker.child.tail.clear();
      const result = await worker.child.call({ ...call, callId: String(this.#nextCallId++) }, (state) =>
        options.onProgress?.(state, worker.child.tail.lines()),
      );
      // stderr is another pipe: let what the plugin printed before answering arrive.
      await new Promise(setImmediate);
      const logTail = worker.child.tail.lines();
      // What the plugin started during the call ends with it, even when the child stays warm.
      const killed = worker.child.endCall();
      if (killed.length > 0) this.#o.logger.debug({ pid: worker.child.pid, killed }, "killed what a plugin started during its call");
      // A child not kept for the next call is gone before its action ends.
      if (!this.#release(worker, true)) await worker.child.exited;
      return { result, logTail, warm };
    } catch (error) {
      this.#release(worker, false);
      // The slot frees, and the cancel outcome is known, only once the process is gone.
      await worker.child.exited;
      throw this.#withTail(error, worker);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Starts min_idle_workers per known module now and waits until they are ready (or failed). */
  async warmUp(): Promise<void> {
    this.#prewarm();
    const idle = [...this.#idle.values()].flat();
    await Promise.allSettled(idle.map((w) => w.ready));
  }

  /**
   * The module's code has changed (a newer generation took its place): its idle children
   * stop now, busy ones once their call ends, and none is started for it again.
   */
  retireTarget(target: PluginTarget): void {
    const key = keyOf(target);
    this.#retired.add(key);
    this.#targets.delete(key);
    for (const worker of [...(this.#idle.get(key) ?? [])]) this.#retire(worker);
    this.#idle.delete(key);
  }

  /** Refuses new calls, fails queued ones, stops every child and waits until all are gone. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#timer);
      const error = new PlinthError("shutting_down", "the server is shutting down");
      for (const waiter of this.#queue.splice(0)) waiter.reject(error);
    }
    await Promise.all([...this.#workers].map((w) => w.child.terminate(this.#o.sigtermTimeoutMs)));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The server is stopping: start no more idle children. Calls still run. */
  drain(): void {
    this.#draining = true;
  }

  /** SIGKILL now to every child, its group and everything it started. */
  kill(): void {
    this.#draining = true;
    for (const worker of this.#workers) worker.child.kill();
  }

  #lease(target: PluginTarget, signal?: AbortSignal): Promise<Worker> {
    signal?.throwIfAborted();
    if (this.#closed) return Promise.reject(new PlinthError("shutting_down", "the server is shutting down"));
    const key = keyOf(target);
    const leased = waitInQueue<Worker, Waiter>(this.#queue, signal, { key, target });
    this.#schedule();
    return leased;
  }

  /** Gives waiting calls a child, in FIFO order, as long as there is one to give. */
  #schedule(): void {
    while (this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const idle = this.#takeIdle(head.key);
      if (idle) {
        this.#queue.shift();
        head.resolve(idle);
        continue;
      }
      if (this.#workers.size < this.#o.maxChildren) {
        this.#queue.shift();
        head.resolve(this.#spawn(head.target, head.key));
        continue;
      }
      // Full: idle children of other modules give up their slots to the queue.
      while (this.#stopping.size < this.#queue.length) {
        const victim = this.#oldestIdle();
        if (!victim) break;
        this.#retire(victim);
      }
      return;
    }
    // spawn() blocks the event loop for milliseconds: keep it off the path of the
    // call that just ended, whose answer goes out first.
    if (this.#o.reuseWorkers && this.#o.minIdleWorkers > 0) setImmediate(() => this.#prewarm());
  }

  #spawn(target: PluginTarget, key: string): Worker {
    const { maxFrameBytes, logTailLines, launch } = this.#o;
    const options = {
      mark: `${this.#o.owner}.${this.#nextChild++}`,
      maxFrameBytes,
      logTailLines,
      label: target.label ?? target.module,
      displayBase: this.#o.displayBase,
    };
    const child = launch ? launch(target, options) : new PluginChild({ ...options, command: childCommand(target, this.#o) });
    const ready = child.hello();
    ready.then(
      () => this.#failing.delete(key),
      () => this.#failing.add(key), // Whoever uses the worker awaits it too; a prewarmed one may have none.
    );
    const worker: Worker = { key, target, child, ready, calls: 0, idleSince: performance.now() };
    void ready.then(
      (hello) => (worker.hello = hello),
      () => {},
    );
    this.#workers.add(worker);
    void child.exited.then((exit) => this.#gone(worker, exit));
    this.#o.logger.debug({ pid: child.pid, module: target.module }, "plugin child started");
    this.events.emit("spawn", child.pid);
    return worker;
  }

  #gone(worker: Worker, exit: ChildExit): void {
    this.#workers.delete(worker);
    this.#stopping.delete(worker);
    this.#removeIdle(worker);
    this.#o.logger.debug({ pid: worker.child.pid, calls: worker.calls, ...exit }, "plugin child exited");
    if (!this.#closed) this.#schedule();
    this.events.emit("exit", worker.child.pid, exit);
  }

  /** Returns the worker to the idle pool, or retires it; true if it was kept. */
  #release(worker: Worker, reusable: boolean): boolean {
    const { reuseWorkers, maxCallsPerWorker } = this.#o;
    const current = !this.#retired.has(worker.key);
    if (reusable && reuseWorkers && current && !this.#closed && !worker.child.stopping && worker.calls < maxCallsPerWorker) {
      worker.idleSince = performance.now();
      const list = this.#idle.get(worker.key) ?? [];
      list.push(worker);
      this.#idle.set(worker.key, list);
      // From now on this module is kept warm (min_idle_workers).
      this.#targets.set(worker.key, worker.target);
      this.#schedule();
      return true;
    }
    this.#retire(worker);
    return false;
  }

  /** Stops a worker that is not running a call; its slot frees when it has exited. */
  #retire(worker: Worker): void {
    this.#removeIdle(worker);
    if (worker.child.exit) return;
    this.#stopping.add(worker);
    void worker.child.terminate(this.#o.sigtermTimeoutMs);
  }

  /** The most recently used idle child of a module that is not stopped; stopped ones are killed on the way. */
  #takeIdle(key: string): Worker | undefined {
    const list = this.#idle.get(key);
    for (let worker = list?.pop(); worker; worker = list?.pop()) {
      if (!worker.child.suspended) return worker;
      this.#discardStopped(worker);
    }
    return undefined;
  }

  /** A stopped child is not a warm one: SIGTERM would wait for it to be continued, so SIGKILL its group now. */
  #discardStopped(worker: Worker): void {
    this.#o.logger.warn({ pid: worker.child.pid, module: worker.target.module }, "idle plugin child was stopped (SIGSTOP): killed");
    this.#removeIdle(worker);
    this.#stopping.add(worker);
    worker.child.kill();
  }

  #removeIdle(worker: Worker): void {
    const list = this.#idle.get(worker.key);
    const i = list?.indexOf(worker) ?? -1;
    if (i >= 0) list!.splice(i, 1);
  }

  #oldestIdle(): Worker | undefined {
    let oldest: Worker | undefined;
    for (const list of this.#idle.values()) {
      const first = list[0];
      if (first && (!oldest || first.idleSince < oldest.idleSince)) oldest = first;
    }
    return oldest;
  }

  /** Keeps minIdleWorkers ready per module while slots are free and nothing waits. */
  #prewarm(): void {
    if (!this.#o.reuseWorkers || this.#closed || this.#draining || this.#queue.length > 0) return;
    for (const [key, target] of this.#targets) {
      if (this.#failing.has(key)) continue;
      const list = this.#idle.get(key) ?? [];
      this.#idle.set(key, list);
      while (list.length < this.#o.minIdleWorkers && this.#workers.size < this.#o.maxChildren) {
        list.unshift(this.#spawn(target, key));
      }
    }
  }

  #withTail(error: unknown, worker: Worker): unknown {
    if (!(error instanceof ChildFailure)) return error;
    const base = this.#o.displayBase;
    return error.with({
      message: formatHint(permissionHint(error.message, worker.target, base), base),
      logTail: worker.child.tail.lines(),
      exit: worker.child.exit,
    });
  }

  /**
   * Every check_children_period: reconcile our books with the operating system (a
   * child gone or a zombie without an exit event fails its call and frees its slot),
   * kill idle children that were stopped, and retire children idle for longer than
   * idle_worker_timeout.
   */
  #maintain(): void {
    for (const worker of this.#workers) {
      if (!worker.child.reconcile()) {
        this.#o.logger.warn({ pid: worker.child.pid }, "plugin child vanished without an exit event");
      }
    }
    for (const list of this.#idle.values()) for (const worker of [...list]) if (worker.child.suspended) this.#discardStopped(worker);
    const cutoff = performance.now() - this.#o.idleWorkerTimeoutMs;
    for (const list of this.#idle.values()) {
      while (list.length > this.#o.minIdleWorkers && list[0]!.idleSince < cutoff) this.#retire(list[0]!);
    }
  }
}
