/**
 * Plugin children without processes, for the ProcessManager's fast tests (its `launch`
 * seam): each says hello, answers or fails its call, prints, exits, stops or vanishes
 * when the test says so. It keeps a child's contract as child.ts has it: one exchange
 * at a time; an exit fails the exchange in progress (cancelled once it was asked to
 * stop, else plugin_exited); terminate() is SIGTERM, then kill() after the timeout on
 * the (fake) clock unless the child obeys; `exited` settles once it is gone. It holds
 * no instances itself: an answer says what it kept and dropped as the test gives them,
 * and forget() throws if it comes during an exchange (the manager's rule).
 */
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import { ValueSchema as JsonValueSchema } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, vi } from "vitest";
import {
  CallKind,
  type Failure,
  type Hello,
  HelloSchema,
  type Result,
  ResultSchema,
  type Value,
  ValueSchema,
} from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type ChildExit, ChildFailure, type ChildOptions, RESIDENT_MISSING } from "../../server/process/child.ts";
import { LogTail } from "../../server/process/log-tail.ts";
import {
  type ChildHandle,
  type ChildLauncher,
  type PluginCall,
  ProcessManager,
  type ProcessManagerOptions,
  type ResidentKey,
  type SentCall,
} from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { silent } from "./fast-engine.ts";

type Signal = "SIGTERM" | "SIGKILL";

/** What an answer says the child's residents did during the call. */
export interface Residents {
  kept?: ResidentKey[];
  dropped?: ResidentKey[];
}

interface Exchange {
  readonly kind: "hello" | "call";
  resolve(value: unknown): void;
  reject(error: ChildFailure): void;
  onProgress?: (state: JsonValuePb | undefined, itemId: string) => void;
  onHeartbeat?: () => void;
}

let pids = 10_000;

/** A JSON value as a child sends it (json_utf8). */
export const workerJson = (value: JsonValue): Value =>
  create(ValueSchema, { kind: { case: "jsonUtf8", value: new TextEncoder().encode(JSON.stringify(value)) } });

export class FakeChild implements ChildHandle {
  readonly pid = ++pids;
  readonly target: PluginTarget;
  readonly options: Omit<ChildOptions, "command">;
  readonly tail: LogTail;
  readonly exited: Promise<ChildExit>;
  /** Stopped by a signal (SIGSTOP): the manager must not give it a call. */
  suspended = false;
  /** On SIGTERM: exit at once (true), or go on until kill() (false). */
  obeysSigterm = true;
  /** Signals received, in order, with the time terminate() gave SIGKILL. */
  readonly signals: { signal: Signal; timeoutMs?: number }[] = [];
  /** Calls received, in order. */
  readonly calls: SentCall[] = [];
  /** Forget frames received, in order: each frame's refs. */
  readonly forgets: ResidentKey[][] = [];
  /** CancelItems frames received, in order: each frame's call id and item ids. */
  readonly cancelledItems: { callId: string; itemIds: string[] }[] = [];
  #exit: ChildExit | undefined;
  #markExited!: (exit: ChildExit) => void;
  #terminated = false;
  #forced = false;
  #vanished = false;
  #killTimer: ReturnType<typeof setTimeout> | undefined;
  #exchange: Exchange | undefined;
  readonly #started = performance.now();

  constructor(target: PluginTarget, options: Omit<ChildOptions, "command">) {
    this.target = target;
    this.options = options;
    this.tail = new LogTail(options.logTailLines);
    this.exited = new Promise((resolve) => (this.#markExited = resolve));
  }

  get exit(): ChildExit | undefined {
    return this.#exit;
  }

  get stopping(): boolean {
    return this.#terminated || this.#exit !== undefined;
  }

  /** Started, and not said hello yet. */
  get waitingForHello(): boolean {
    return this.#exchange?.kind === "hello";
  }

  /** The call it runs now, if any. */
  get current(): SentCall | undefined {
    return this.#exchange?.kind === "call" ? this.calls.at(-1) : undefined;
  }

  // ---- what the manager calls ----

  hello(): Promise<Hello> {
    return this.#run<Hello>("hello");
  }

  call(call: SentCall, onProgress: (state: JsonValuePb | undefined, itemId: string) => void, onHeartbeat?: () => void): Promise<Result> {
    const result = this.#run<Result>("call", onProgress);
    if (onHeartbeat && this.#exchange) this.#exchange.onHeartbeat = onHeartbeat;
    if (!this.#exit) this.calls.push(call);
    return result;
  }

  cancelItems(callId: string, itemIds: readonly string[]): void {
    if (this.current?.callId === callId && !this.stopping) this.cancelledItems.push({ callId, itemIds: [...itemIds] });
  }

  /** The calls asked to stop by message (cancelCall), by call id. */
  readonly cancelledCalls: string[] = [];

  cancelCall(): boolean {
    if (!this.current || this.stopping) return false;
    this.cancelledCalls.push(this.current.callId);
    return true;
  }

  /** The answers to the calls' checkpoints, in order. */
  readonly checkpointAnswers: { callId: string; seq: number; error: string }[] = [];

  checkpointStored(callId: string, seq: number, error: string): void {
    this.checkpointAnswers.push({ callId, seq, error });
  }

  itemFailure(f: Failure): ChildFailure {
    return new ChildFailure("plugin_error", `${f.name}: ${f.message}`);
  }

  forget(refs: ResidentKey[]): void {
    if (refs.length === 0 || this.stopping) return;
    if (this.#exchange) throw new Error(`fake child ${this.pid}: forget sent during a ${this.#exchange.kind} exchange`);
    this.forgets.push(refs.map(({ modelId, revision }) => ({ modelId, revision })));
  }

  endCall(): number[] {
    return [];
  }

  terminate(sigtermTimeoutMs: number): Promise<ChildExit> {
    if (!this.#exit && !this.#terminated) {
      this.#terminated = true;
      this.signals.push({ signal: "SIGTERM", timeoutMs: sigtermTimeoutMs });
      if (this.obeysSigterm) this.#finish(null, "SIGTERM");
      else this.#killTimer = setTimeout(() => this.kill(), sigtermTimeoutMs);
    }
    return this.exited;
  }

  kill(): void {
    if (this.#exit) return;
    this.#terminated = true;
    this.#forced = true;
    clearTimeout(this.#killTimer);
    this.signals.push({ signal: "SIGKILL" });
    this.#finish(null, "SIGKILL");
  }

  reconcile(): boolean {
    if (this.#exit) return false;
    if (!this.#vanished) return true;
    this.#finish(null, null);
    return false;
  }

  // ---- what the test makes it do ----

  /** The plugin module loaded: it says hello. */
  sayHello(): void {
    this.#settle("hello", (e) => e.resolve(create(HelloSchema, { runtime: this.target.runtime, pid: this.pid })));
  }

  /** The plugin module failed to load: it says so, and exits. */
  failToLoad(message: string): void {
    this.#settle("hello", (e) => e.reject(new ChildFailure("plugin_load_failed", `plugin ${this.options.label} failed to load: ${message}`)));
    this.#finish(1, null);
  }

  /** It answers its call: `value` (JSON) as the result, with the instance it returned and what it kept and dropped. */
  answer(value?: JsonValue, more: Residents & { instance?: Uint8Array } = {}): void {
    const encoded = value === undefined ? undefined : workerJson(value);
    const { kept = [], dropped = [], instance } = more;
    this.#settle("call", (e) =>
      e.resolve(create(ResultSchema, { ...(encoded ? { value: encoded } : {}), ...(instance ? { instance } : {}), kept, dropped })),
    );
  }

  /** It answers its batch call: each item's value (JSON), or an Error for an item that failed. */
  answerItems(outcomes: Record<string, JsonValue | Error>): void {
    const items = Object.entries(outcomes).map(([itemId, outcome]) => ({
      itemId,
      outcome:
        outcome instanceof Error
          ? { case: "failure" as const, value: { name: outcome.name, message: outcome.message } }
          : { case: "value" as const, value: workerJson(outcome) },
    }));
    this.#settle("call", (e) => e.resolve(create(ResultSchema, { items })));
  }

  /** It says its call is alive (ctx.heartbeat()). */
  heartbeat(): void {
    this.#exchange?.onHeartbeat?.();
  }

  /** It reports progress on its call (of one item of a batch, with `itemId`). */
  report(state: JsonValue, itemId = ""): void {
    this.#exchange?.onProgress?.(fromJson(JsonValueSchema, state), itemId);
  }

  /** Its call fails: the plugin threw. */
  fail(message = "Error: the plugin failed", residents: Residents = {}): void {
    const changes = { kept: residents.kept ?? [], dropped: residents.dropped ?? [] };
    this.#settle("call", (e) => e.reject(new ChildFailure("plugin_error", message, "", undefined, { residents: changes })));
  }

  /** It does not hold the resident instance its call named: it says so (a Failure "ResidentMissing"), as the SDK does. */
  failResidentMissing(residents: Residents = {}): void {
    const call = this.current;
    const changes = { kept: residents.kept ?? [], dropped: residents.dropped ?? [] };
    const message = `${RESIDENT_MISSING}: model ${call?.modelId} revision ${call?.revision} is not resident`;
    this.#settle("call", (e) => e.reject(new ChildFailure("plugin_error", message, "", undefined, { residents: changes, residentMissing: true })));
  }

  /** A line on its stderr. */
  print(line: string): void {
    this.tail.push(new TextEncoder().encode(`${line}\n`));
  }

  /** It exits on its own, with `code`. */
  crash(code = 1): void {
    this.#finish(code, null);
  }

  /** It is gone without an exit event: only the manager's reconciliation finds out. */
  vanish(): void {
    this.#vanished = true;
  }

  #run<T>(kind: Exchange["kind"], onProgress?: Exchange["onProgress"]): Promise<T> {
    if (this.#exchange) throw new Error(`fake child ${this.pid}: an exchange is already in progress`);
    return new Promise<T>((resolve, reject) => {
      if (this.#exit) {
        const code = kind === "hello" ? "plugin_load_failed" : "plugin_exited";
        return reject(new ChildFailure(code, `plugin ${this.options.label} ${describeExit(this.#exit)}`));
      }
      this.#exchange = { kind, resolve: resolve as (value: unknown) => void, reject, ...(onProgress ? { onProgress } : {}) };
    });
  }

  #settle(kind: Exchange["kind"], fn: (exchange: Exchange) => void): void {
    const exchange = this.#exchange;
    if (exchange?.kind !== kind) throw new Error(`fake child ${this.pid} is not in a ${kind} exchange (${exchange?.kind ?? "idle"})`);
    this.#exchange = undefined;
    fn(exchange);
  }

  #finish(code: number | null, signal: Signal | null): void {
    if (this.#exit) return;
    clearTimeout(this.#killTimer);
    const now = performance.now();
    const exit: ChildExit = {
      code,
      signal,
      terminated: this.#terminated,
      forced: this.#forced,
      vanished: this.#vanished,
      protocolError: false,
      durationMs: now - this.#started,
      stopMs: 0,
    };
    this.#exit = exit;
    const exchange = this.#exchange;
    this.#exchange = undefined;
    if (exchange) {
      const when = exchange.kind === "hello" ? "before saying hello" : "before answering";
      exchange.reject(
        this.#terminated
          ? new ChildFailure("cancelled", "the action was cancelled")
          : new ChildFailure(
              exchange.kind === "hello" ? "plugin_load_failed" : "plugin_exited",
              `plugin ${this.options.label} ${describeExit(exit)} ${when}`,
            ),
      );
    }
    this.#markExited(exit);
  }
}

function describeExit(exit: ChildExit): string {
  if (exit.vanished) return "vanished";
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

/** The launcher to give the ProcessManager, and every child it launched, in order. */
export class FakeChildren {
  readonly all: FakeChild[] = [];

  readonly launch: ChildLauncher = (target, options) => {
    const child = new FakeChild(target, options);
    this.all.push(child);
    return child;
  };

  /** The children not gone yet. */
  get alive(): FakeChild[] {
    return this.all.filter((c) => !c.exit);
  }

  /** The children of a plugin module. */
  of(module: string): FakeChild[] {
    return this.all.filter((c) => c.target.module === module);
  }

  /** The child running a call now whose first argument is `tag` (calls in these tests carry one). */
  running(tag: string): FakeChild {
    const found = this.all.find((c) => c.current && tagOf(c.current) === tag);
    if (!found)
      throw new Error(`no child runs call ${tag}; running: ${this.all.flatMap((c) => (c.current ? [tagOf(c.current)] : [])).join(", ") || "none"}`);
    return found;
  }

  /** Every child still waiting to say hello says it. */
  helloAll(): void {
    for (const child of this.alive) if (child.waitingForHello) child.sayHello();
  }

  /** Kills every child left (a test's cleanup). */
  killAll(): void {
    for (const child of this.all) child.kill();
  }
}

/** A predict on fake.Model tagged `tag`: its first argument, which tagOf reads back. */
export function taggedCall(tag: string): PluginCall {
  return { kind: CallKind.PREDICT, target: "fake.Model", args: [workerJson(tag)], kwargs: {} };
}

/** A call's tag: its first argument's text. */
export function tagOf(call: Pick<SentCall, "args">): string {
  const value = call.args[0]?.kind;
  return value?.case === "jsonUtf8" ? (JSON.parse(new TextDecoder().decode(value.value)) as string) : "";
}

/** A ProcessManager's options whose children are `children`'s fakes: a quiet test server's, with `options` over them. */
export function fakeManagerOptions(children: FakeChildren, options: Partial<ProcessManagerOptions> = {}): ProcessManagerOptions {
  return {
    maxChildren: 2,
    sigtermTimeoutMs: 5000,
    checkChildrenPeriodMs: 1000,
    maxFrameBytes: 2 ** 20,
    logTailLines: 10,
    denoDir: "/nonexistent",
    progressIntervalMs: 50,
    reuseWorkers: true,
    maxCallsPerWorker: 1000,
    idleWorkerTimeoutMs: 60_000,
    minIdleWorkers: 0,
    owner: "test",
    logger: silent,
    launch: children.launch,
    ...options,
  };
}

/**
 * A ProcessManager on fake children and a fake clock for each test of the file (or
 * describe) that calls this, closed after it; `options` over fakeManagerOptions'.
 */
export function useFakeManager(options: Partial<ProcessManagerOptions> = {}): { readonly children: FakeChildren; readonly manager: ProcessManager } {
  const current = {} as { children: FakeChildren; manager: ProcessManager };
  beforeEach(() => {
    // The clock is fake; setImmediate stays real: the manager's "next turn" is not time.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"] });
    current.children = new FakeChildren();
    current.manager = new ProcessManager(fakeManagerOptions(current.children, options));
  });
  afterEach(async () => {
    current.children.killAll();
    await current.manager.close();
    vi.useRealTimers();
  });
  return current;
}
