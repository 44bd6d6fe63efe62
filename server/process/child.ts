/**
 * One plugin child process: spawn, hello, then calls one at a time over its pipes.
 *
 * Whatever the plugin starts dies with it. The child leads its own process group, and
 * it and everything it starts carry its mark in their environment (PLINTH_CHILD), so a
 * grandchild that left the group (setsid, detached) or the process tree (its parent
 * exited) is still found: every signal goes to the group, to the processes below the
 * child, and to the processes with its mark. A child whose spawn failed has no pid and
 * is never signalled; no signal ever goes to pid 1 or below.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import {
  type CallSchema,
  type Failure,
  type Hello,
  type ItemOutcome,
  type Result,
  type ServerMessage,
  ServerMessageSchema,
  type Value,
  type WorkerMessage,
  WorkerMessageSchema,
} from "../../gen/plinth/worker/v1/worker_pb.ts";
import { encodeChunks } from "../../sdk/worker/encode-chunks.ts";
import { FrameDecoder, framedChunks } from "../../sdk/worker/frames.ts";
import { PLINTH_DIR } from "../package-root.ts";
import { LogTail } from "./log-tail.ts";
import {
  allProcessesAsync,
  commandLine,
  hasMark,
  isBelow,
  lastPid,
  MARK_VARIABLE,
  markedProcessesAsync,
  markOf,
  type PidSnapshot,
  ProcFile,
  pidSnapshot,
  procStat,
  signalOwned,
  treeBelow,
} from "./proc.ts";
import type { ChildCommand } from "./runtimes.ts";

/** How a child ended: data, not an exception. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** We asked it to stop (cancel, shutdown or a broken protocol). */
  terminated: boolean;
  /** SIGKILL was needed: it outlived sigterm_timeout. */
  forced: boolean;
  /** It vanished without an exit event (found by reconciliation). */
  vanished: boolean;
  /** The spawn failed: there never was a process. */
  spawnError?: string | undefined;
  /** It broke the pipe protocol (and was stopped for it). */
  protocolError: boolean;
  durationMs: number;
  /** From terminate() to the exit; 0 if it was not terminated. */
  stopMs: number;
}

/** A model's revision, as a child may hold it resident (a ResidentRef). */
export interface ResidentKey {
  modelId: string;
  revision: bigint;
}

/** How a call changed what its child holds resident (its Result's or Failure's dropped and kept). */
export interface ResidentChanges {
  dropped: readonly ResidentKey[];
  kept: readonly ResidentKey[];
}

/** The name of the Failure a child answers a call with when it does not hold the resident instance the call names. */
export const RESIDENT_MISSING = "ResidentMissing";

/** What went wrong in a child, as the engine reports it on the action. */
export type ChildFailureCode = "plugin_error" | "plugin_exited" | "plugin_load_failed" | "protocol_error" | "out_of_memory" | "cancelled" | "stalled";

export class ChildFailure extends Error {
  readonly code: ChildFailureCode;
  /** The plugin's own stack, when the error came from plugin code. */
  readonly pluginStack: string;
  /** A PluginError's own code and details, as the plugin gave them (the engine checks the code). */
  readonly plugin: { code: string; details: JsonValuePb | undefined } | undefined;
  /** The child's last output lines, and how it ended, once the manager has added them (with()). */
  readonly logTail: string[];
  readonly exit: ChildExit | undefined;
  /** What the child's residents did during the failed call, as its Failure said. */
  readonly residents: ResidentChanges;
  /** The child did not hold the resident instance the call named (a Failure "ResidentMissing"). */
  readonly residentMissing: boolean;

  constructor(
    code: ChildFailureCode,
    message: string,
    pluginStack = "",
    plugin?: { code: string; details: JsonValuePb | undefined },
    more: { logTail?: string[]; exit?: ChildExit | undefined; residents?: ResidentChanges; residentMissing?: boolean } = {},
  ) {
    super(message);
    this.name = "ChildFailure";
    this.code = code;
    this.pluginStack = pluginStack;
    this.plugin = plugin;
    this.logTail = more.logTail ?? [];
    this.exit = more.exit;
    this.residents = more.residents ?? { dropped: [], kept: [] };
    this.residentMissing = more.residentMissing ?? false;
  }

  /** The same failure with the child's output and exit, and a message that says more: a new error, this one unchanged. */
  with(more: { message: string; logTail: string[]; exit: ChildExit | undefined }): ChildFailure {
    const failure = new ChildFailure(this.code, more.message, this.pluginStack, this.plugin, {
      ...more,
      residents: this.residents,
      residentMissing: this.residentMissing,
    });
    if (this.stack) failure.stack = this.stack;
    return failure;
  }
}

export interface ChildOptions {
  command: ChildCommand;
  /** Set as PLINTH_CHILD in the child's environment, and so in its descendants'. */
  mark: string;
  maxFrameBytes: number;
  logTailLines: number;
  /** A label for messages: the plugin module, as the config names it. */
  label: string;
  /** Absolute paths under this folder are shown relative to it in what clients see (stacks). */
  displayBase?: string | undefined;
}

/** Why a command cannot run, as the system says it. */
function whyNotRunnable(file: string): string {
  try {
    accessSync(file, constants.X_OK);
    return `${file} did not start`;
  } catch (error) {
    return `${file}: ${(error as Error).message.replace(/, access '.*'$/, "")}`;
  }
}

/**
 * The compiler that tsx starts in a Node child at its first transform (esbuild's
 * long-lived service; a call that imports TypeScript no other did starts it): the
 * runtime's, not the plugin's, and the child cannot compile again once it is killed.
 */
function isCompilerService(pid: number): boolean {
  const [file, flag] = commandLine(pid);
  return file?.endsWith("/esbuild") === true && flag?.startsWith("--service=") === true;
}

/**
 * How V8 says it ran out of memory as it aborts: Node ("FATAL ERROR: Reached heap limit
 * Allocation failed - JavaScript heap out of memory"), and V8 under Node or Deno ("#
 * Fatal process out of memory: …", "Fatal JavaScript out of memory: …").
 */
const FATAL_OUT_OF_MEMORY = /FATAL ERROR:.*(out of memory|allocation failed)|Fatal (process|JavaScript) out of memory/i;

/** How long a child whose stdout closed has to exit before it counts as broken. */
const STDOUT_CLOSED_GRACE_MS = 250;

/**
 * How long after a child's exit the processes that escaped its group are looked for.
 * The scan reads every process's /proc files: hundreds of callbacks that, at once, held
 * up the answer of the call the exit failed by 4–6 ms (issue 22).
 */
const STRAYS_AFTER_EXIT_MS = 50;

function describeExit(exit: ChildExit): string {
  if (exit.spawnError) return `could not be started: ${exit.spawnError}`;
  if (exit.vanished) return "vanished";
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

/** What is wrong with a batch's item outcomes, given the items sent; undefined if nothing. */
function itemsProblem(sent: ReadonlySet<string>, items: readonly ItemOutcome[]): string | undefined {
  if (sent.size === 0) return items.length > 0 ? "item outcomes in the result of a call that sent no items" : undefined;
  const answered = new Set<string>();
  for (const { itemId } of items) {
    if (!sent.has(itemId)) return `an outcome of an unknown item ${JSON.stringify(itemId)}`;
    if (answered.has(itemId)) return `two outcomes of item ${JSON.stringify(itemId)}`;
    answered.add(itemId);
  }
  return answered.size === sent.size ? undefined : `outcomes of ${answered.size} of its ${sent.size} items`;
}

/** The frame handler of the exchange in progress (hello or one call). */
interface Exchange {
  onMessage(message: WorkerMessage): void;
  onEnd(failure: ChildFailure): void;
}

export class PluginChild {
  readonly process: ChildProcess;
  /** 0 when the spawn failed: there is no process to signal. */
  readonly pid: number;
  readonly mark: string;
  readonly startedAt = performance.now();
  readonly tail: LogTail;
  /** Settles when the process has exited and its stdout is drained. */
  readonly exited: Promise<ChildExit>;
  readonly #options: ChildOptions;
  #exit: ChildExit | undefined;
  #markExited!: (exit: ChildExit) => void;
  #terminatedAt: number | undefined;
  #forced = false;
  #killTimer: ReturnType<typeof setTimeout> | undefined;
  #exchange: Exchange | undefined;
  #broken: ChildFailure | undefined;
  /** Consecutive reconciliations that found the process gone or a zombie. */
  #missing = 0;
  /** The child's start time (clock ticks since boot): what carries its mark started after it. */
  #startTicks: string | undefined;
  /** Settles once the processes signalled so far beyond the group have been found and signalled. */
  #reaping: Promise<void> = Promise.resolve();
  /** Why the spawn failed, when it did. */
  #spawnError: string | undefined;
  /** The processes there were when the current call was sent. */
  #before: PidSnapshot | undefined;
  /** The latest list of processes taken: still true while no pid has been given out since. */
  #latest: PidSnapshot | undefined;
  /** The id of the last call sent. */
  #callId: string | undefined;
  /** Its /proc/<pid>/stat, open while it lives. */
  readonly #stat: ProcFile;

  constructor(options: ChildOptions) {
    this.#options = options;
    this.tail = new LogTail(options.logTailLines);
    this.exited = new Promise((resolve) => (this.#markExited = resolve));
    const { file, args, env } = options.command;
    this.mark = options.mark;
    this.process = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"], detached: true, env: { ...env, [MARK_VARIABLE]: options.mark } });
    this.pid = this.process.pid ?? 0;
    this.#stat = new ProcFile(`/proc/${this.pid > 0 ? this.pid : "none"}/stat`);
    this.#startTicks = this.#stat.stat()?.startTicks;
    this.process.on("error", (error) => {
      // Spawn failed (binary missing, not executable): no exit event follows.
      this.tail.push(new TextEncoder().encode(`${error.message}\n`));
      this.#finish(null, null);
    });
    if (this.pid === 0) {
      // Failed already: an immediate exit, whatever comes next (cancel, stop), before
      // the error event even arrives.
      this.#spawnError = whyNotRunnable(file);
      this.#finish(null, null);
    }
    this.process.on("exit", (code, signal) => {
      // Whatever the plugin started goes with it: its group at once, and every marked
      // process once the call's failure has gone out (the scan is all of /proc).
      this.#signalAll("SIGKILL", STRAYS_AFTER_EXIT_MS);
      // Report the exit once stdout is drained, so that a last frame is not lost; a
      // grandchild that escaped the group could hold the pipe open, hence the cap.
      const finish = () => this.#finish(code, signal);
      if (this.process.stdout!.closed) return finish();
      const cap = setTimeout(finish, 1000);
      this.process.stdout!.once("close", () => {
        clearTimeout(cap);
        finish();
      });
    });
    this.process.stdin!.on("error", () => {}); // EPIPE when the child is gone: its exit tells the story.
    this.process.stderr!.on("data", (chunk: Buffer) => this.tail.push(chunk));
    const decoder = new FrameDecoder(options.maxFrameBytes);
    const stdout = this.process.stdout!;
    stdout.on("data", (chunk: Buffer) => {
      if (this.#broken) return;
      let messages: WorkerMessage[];
      try {
        messages = decoder.push(chunk).map((frame) => fromBinary(WorkerMessageSchema, frame));
      } catch (error) {
        return this.#break(`plugin ${options.label} broke the protocol: ${(error as Error).message}`);
      }
      for (const message of messages) {
        if (!this.#exchange) return this.#break(`plugin ${options.label} sent ${message.kind.case} while idle`);
        this.#exchange.onMessage(message);
      }
    });
    stdout.on("end", () => {
      // The protocol channel closed. If the process lives on, it can never answer; if
      // it is exiting, its exit event is on its way and tells the story. One being
      // stopped (terminate: its SIGKILL is set) is exiting, however long it takes on a
      // busy machine: that is no broken protocol.
      const check = setTimeout(() => {
        if (!this.#exit && this.#terminatedAt === undefined) this.#break(`plugin ${options.label} closed its stdout`);
      }, STDOUT_CLOSED_GRACE_MS);
      void this.exited.then(() => clearTimeout(check));
    });
  }

  get exit(): ChildExit | undefined {
    return this.#exit;
  }

  /** Stopping or gone: never to be given another call. */
  get stopping(): boolean {
    return this.#terminatedAt !== undefined || this.#exit !== undefined || this.#broken !== undefined;
  }

  /**
   * Stopped by a signal (SIGSTOP, SIGTSTP: a plugin can stop itself), as the operating
   * system says now: a call given to it would hang.
   */
  get suspended(): boolean {
    const state = this.pid > 1 ? this.#stat.stat()?.state : undefined;
    return state === "T" || state === "t";
  }

  /** Waits for the hello frame with the plugin's manifest. */
  hello(): Promise<Hello> {
    return this.#run<Hello>(
      (message, resolve, reject) => {
        if (message.kind.case === "hello") resolve(message.kind.value);
        else if (message.kind.case === "failure") {
          const f = message.kind.value;
          reject(
            new ChildFailure(
              "plugin_load_failed",
              `plugin ${this.#options.label} failed to load: ${f.name}: ${this.#display(f.message)}`,
              this.#display(f.stack),
            ),
          );
        } else reject(new ChildFailure("protocol_error", `plugin ${this.#options.label} sent ${message.kind.case} before hello`));
      },
      "plugin_load_failed",
      "before saying hello",
    );
  }

  /**
   * Kills what the plugin started during the call that just ended and left running: the
   * processes that did not exist when the call was sent and are below the child or
   * carry its mark. What it started before (as its module loaded) lives on with the
   * child. Returns the pids killed.
   */
  endCall(): number[] {
    const before = this.#before;
    this.#before = undefined;
    // No pid given out since the call was sent (the common case): nothing was started.
    if (!before || this.pid <= 1 || lastPid() === before.last) return [];
    const now = pidSnapshot();
    this.#latest = now;
    const killed: number[] = [];
    for (const pid of now.pids) {
      if (before.pids.has(pid) || pid === this.pid) continue;
      const state = procStat(pid)?.state;
      if (state === undefined || state === "Z") continue;
      if (!hasMark(markOf(pid), this.mark) && !isBelow(pid, this.pid)) continue;
      if (isCompilerService(pid)) continue;
      signalOwned(pid, "SIGKILL");
      killed.push(pid);
    }
    return killed;
  }

  /**
   * Sends one call and waits for its result; progress goes to onProgress (with the item
   * it is of, for a batch), heartbeats to onHeartbeat. A batch's Result must answer each
   * item sent exactly once.
   */
  call(
    call: MessageInitShape<typeof CallSchema> & { callId: string },
    onProgress: (state: JsonValuePb | undefined, itemId: string) => void,
    onHeartbeat: () => void = () => {},
    onCheckpoint: (seq: number, value: Value | undefined) => void = (seq) =>
      this.checkpointStored(call.callId, seq, "checkpoints are not kept for this call"),
  ): Promise<Result> {
    const sent = new Set((call.items ?? []).map((item) => item.itemId ?? ""));
    const promise = this.#run<Result>(
      (message, resolve, reject) => {
        const kind = message.kind;
        const unexpected = (what: string) =>
          reject(new ChildFailure("protocol_error", `plugin ${this.#options.label} sent ${what} for call ${call.callId}`));
        if (kind.case === "hello" || kind.value?.callId !== call.callId) unexpected(`an unexpected ${kind.case}`);
        else if (kind.case === "progress") {
          if (kind.value.itemId && !sent.has(kind.value.itemId)) unexpected(`progress of an unknown item ${JSON.stringify(kind.value.itemId)}`);
          else onProgress(kind.value.state, kind.value.itemId);
        } else if (kind.case === "heartbeat") onHeartbeat();
        else if (kind.case === "checkpoint") onCheckpoint(kind.value.seq, kind.value.value);
        else if (kind.case === "result") {
          const problem = itemsProblem(sent, kind.value.items);
          if (problem) unexpected(problem);
          else resolve(kind.value);
        } else if (kind.case === "failure") reject(this.#pluginFailure(kind.value));
      },
      "plugin_exited",
      "before answering",
    );
    // Every process there is as the call starts: what is new when it ends, it started
    // (endCall). The list taken at the end of the last call still holds if no pid has been
    // given out since. (A pid that ends and is given out again within one call, after the
    // kernel's pids wrapped around, is missed.)
    if (this.#latest === undefined || lastPid() !== this.#latest.last) this.#latest = pidSnapshot();
    this.#before = this.#latest;
    this.#callId = call.callId;
    this.#send(create(ServerMessageSchema, { kind: { case: "call", value: call } }));
    return promise;
  }

  /**
   * Stops these items of the batch call that runs (their signals abort in the plugin);
   * the call goes on with the others. Nothing is sent once the call has ended.
   */
  cancelItems(callId: string, itemIds: readonly string[]): void {
    if (itemIds.length === 0 || this.stopping || !this.#exchange || this.#callId !== callId) return;
    this.#send(create(ServerMessageSchema, { kind: { case: "cancelItems", value: { callId, itemIds: [...itemIds] } } }));
  }

  /**
   * Asks the plugin to stop the call that runs (its ctx.signal aborts); the child lives on
   * once the call has answered. Returns false when no call runs to ask about.
   */
  cancelCall(): boolean {
    if (this.stopping || !this.#exchange || this.#callId === undefined) return false;
    this.#send(create(ServerMessageSchema, { kind: { case: "cancel", value: { callId: this.#callId } } }));
    return true;
  }

  /** Answers the call's checkpoint `seq`: stored, or why not. Nothing is sent once the call has ended. */
  checkpointStored(callId: string, seq: number, error: string): void {
    if (this.stopping || !this.#exchange || this.#callId !== callId) return;
    this.#send(create(ServerMessageSchema, { kind: { case: "checkpointStored", value: { callId, seq, error } } }));
  }

  /** An item's failure in a batch's Result, as the action records it. */
  itemFailure(f: Failure): ChildFailure {
    return this.#pluginFailure(f);
  }

  #send(message: ServerMessage): void {
    const stdin = this.process.stdin!;
    stdin.cork(); // the frame's parts in one writev, large arguments by reference
    for (const part of framedChunks(encodeChunks(ServerMessageSchema, message))) stdin.write(part);
    stdin.uncork();
  }

  /**
   * Tells the child to drop these resident instances. A frame of its own, outside any
   * exchange: it gets no answer, and is sent only between calls (the manager's rule), so
   * that it cannot cross a call's answer that keeps one of them.
   */
  forget(refs: readonly ResidentKey[]): void {
    if (refs.length === 0 || this.stopping) return;
    if (this.#exchange) throw new Error(`plugin ${this.#options.label}: forget sent during an exchange`);
    this.#send(create(ServerMessageSchema, { kind: { case: "forget", value: { refs: [...refs] } } }));
  }

  /** Closes stdin: the worker finishes what it is doing and exits. */
  endInput(): void {
    this.process.stdin!.end();
  }

  /**
   * SIGTERM to the process group, SIGKILL after sigtermTimeoutMs. Idempotent;
   * resolves when the process is gone.
   */
  terminate(sigtermTimeoutMs: number): Promise<ChildExit> {
    if (!this.#exit && this.#terminatedAt === undefined) {
      this.#terminatedAt = performance.now();
      this.#signalAll("SIGTERM");
      this.#killTimer = setTimeout(() => this.kill(), sigtermTimeoutMs);
    }
    // Once it is gone, and what it started has been signalled too.
    return this.exited.then(async (exit) => {
      await this.#reaping;
      return exit;
    });
  }

  /** SIGKILL now, to the child, its group and everything it started. */
  kill(): void {
    if (this.#exit) return;
    this.#terminatedAt ??= performance.now();
    this.#forced = true;
    clearTimeout(this.#killTimer);
    this.#signalAll("SIGKILL");
  }

  /**
   * Checks with the operating system that the process still runs. A process gone, or
   * a zombie, on two checks in a row without our having seen its exit is marked
   * exited (vanished); one check is not enough, as an exit on its way is a zombie
   * for a moment too. Returns false once marked.
   */
  reconcile(): boolean {
    if (this.#exit) return false;
    const state = this.#stat.stat()?.state;
    if (state !== undefined && state !== "Z" && state !== "X") {
      this.#missing = 0;
      return true;
    }
    if (++this.#missing < 2) return true;
    this.#signalAll("SIGKILL");
    this.#finish(null, null, true);
    return false;
  }

  #pluginFailure(f: Failure): ChildFailure {
    const stack = this.#display(f.stack);
    const residents = { dropped: f.dropped, kept: f.kept };
    if (f.name === RESIDENT_MISSING) {
      return new ChildFailure("plugin_error", `${f.name}: ${this.#display(f.message)}`, stack, undefined, { residents, residentMissing: true });
    }
    if (f.name === "AbortError" && this.#terminatedAt !== undefined) {
      return new ChildFailure("cancelled", "the action was cancelled", stack);
    }
    if (f.name === "OutOfMemoryError") {
      return new ChildFailure("out_of_memory", `plugin ${this.#options.label} ran out of memory (plugins[].max_memory_mb): ${f.message}`, stack);
    }
    if (f.code) return new ChildFailure("plugin_error", this.#display(f.message), stack, { code: f.code, details: f.details }, { residents });
    return new ChildFailure("plugin_error", `${f.name}: ${this.#display(f.message)}`, stack, undefined, { residents });
  }

  /**
   * Text as clients see it: paths under displayBase relative to it, and those in Plinth's
   * own folder (the SDK's frames) as `plinth/…`, not the host's absolute paths.
   */
  #display(text: string): string {
    const base = this.#options.displayBase;
    if (!base) return text;
    const strip = (t: string, dir: string, as: string) => t.replaceAll(`file://${dir}/`, as).replaceAll(`${dir}/`, as);
    return strip(strip(text, base, ""), PLINTH_DIR, "plinth/");
  }

  /**
   * The group at once; then, found off the event loop's path (a scan of /proc takes
   * milliseconds on a busy machine) and `straysAfterMs` later, the processes below the
   * child and every process with its mark: what left the group (a setsid'd daemon, say).
   * terminate() waits for them.
   */
  #signalAll(signal: NodeJS.Signals, straysAfterMs = 0): void {
    if (this.pid <= 1) return;
    signalOwned(-this.pid, signal);
    const scan = straysAfterMs > 0 ? delay(straysAfterMs).then(() => this.#signalStrays(signal)) : this.#signalStrays(signal);
    this.#reaping = this.#reaping.then(() => scan);
  }

  async #signalStrays(signal: NodeJS.Signals): Promise<void> {
    try {
      const all = await allProcessesAsync();
      const marked = await markedProcessesAsync(this.mark, all, this.#startTicks);
      for (const pid of new Set([...treeBelow(this.pid, all), ...marked])) signalOwned(pid, signal);
    } catch {
      // /proc unreadable: the group was signalled; the mark is looked for again at the next start.
    }
  }

  #break(message: string): void {
    if (this.#broken) return;
    this.#broken = new ChildFailure("protocol_error", message);
    this.#exchange?.onEnd(this.#broken);
    void this.terminate(0);
  }

  #finish(code: number | null, signal: NodeJS.Signals | null, vanished = false): void {
    if (this.#exit) return;
    clearTimeout(this.#killTimer);
    this.#stat.close();
    const now = performance.now();
    this.#exit = {
      code,
      signal,
      terminated: this.#terminatedAt !== undefined,
      forced: this.#forced,
      vanished,
      ...(this.#spawnError ? { spawnError: this.#spawnError } : {}),
      protocolError: this.#broken !== undefined,
      durationMs: now - this.startedAt,
      stopMs: this.#terminatedAt === undefined ? 0 : now - this.#terminatedAt,
    };
    const exit = this.#exit;
    // A runtime that ran out of memory aborts the process and says so on stderr, then
    // prints a native stack: look through the whole tail (this call's output) for it.
    const outOfMemory = FATAL_OUT_OF_MEMORY.test(this.tail.lines().join("\n"));
    const failure =
      this.#terminatedAt !== undefined && !this.#broken
        ? new ChildFailure("cancelled", "the action was cancelled")
        : outOfMemory
          ? new ChildFailure("out_of_memory", `plugin ${this.#options.label} ran out of memory (plugins[].max_memory_mb) and ${describeExit(exit)}`)
          : new ChildFailure("plugin_exited", `plugin ${this.#options.label} ${describeExit(exit)}`);
    this.#exchange?.onEnd(failure);
    this.#markExited(exit);
  }

  /**
   * Runs one exchange: frames go to `handle` until it settles; it fails when the
   * protocol breaks or the child exits first. One exchange at a time.
   */
  #run<T>(
    handle: (message: WorkerMessage, resolve: (value: T) => void, reject: (error: ChildFailure) => void) => void,
    exitCode: ChildFailureCode,
    when: string,
  ): Promise<T> {
    if (this.#exchange) throw new Error(`plugin ${this.#options.label}: an exchange is already in progress`);
    return new Promise<T>((resolve, reject) => {
      const settle = (fn: () => void) => {
        if (this.#exchange !== exchange) return;
        this.#exchange = undefined;
        fn();
      };
      const exchange: Exchange = {
        onMessage: (message) =>
          handle(
            message,
            (value) => settle(() => resolve(value)),
            (error) => settle(() => reject(error)),
          ),
        onEnd: (failure) =>
          settle(() => {
            if (failure.code === "plugin_exited") {
              reject(new ChildFailure(exitCode, `${failure.message} ${when}`));
            } else reject(failure);
          }),
      };
      if (this.#broken) return reject(this.#broken);
      if (this.#exit) {
        const exit = this.#exit;
        return reject(new ChildFailure(exitCode, `plugin ${this.#options.label} ${describeExit(exit)}${exit.spawnError ? "" : ` ${when}`}`));
      }
      this.#exchange = exchange;
    });
  }
}
