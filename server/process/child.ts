/**
 * One plugin child process: spawn, hello, one call, exit. It leads its own process
 * group so that signals reach whatever the plugin itself started.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  CallSchema,
  type Failure,
  type Hello,
  type Result,
  ServerMessageSchema,
  type WorkerMessage,
  WorkerMessageSchema,
} from "../../gen/plinth/worker/v1/worker_pb.ts";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import { encodeFrame, FrameDecoder } from "../../sdk/worker/frames.ts";
import { LogTail } from "./log-tail.ts";
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
  durationMs: number;
}

/** What went wrong in a child, as the engine reports it on the action. */
export type ChildFailureCode = "plugin_error" | "plugin_exited" | "plugin_load_failed" | "protocol_error" | "cancelled";

export class ChildFailure extends Error {
  readonly code: ChildFailureCode;
  /** The plugin's own stack, when the error came from plugin code. */
  readonly pluginStack: string;
  logTail: string[] = [];
  exit: ChildExit | undefined;

  constructor(code: ChildFailureCode, message: string, pluginStack = "") {
    super(message);
    this.name = "ChildFailure";
    this.code = code;
    this.pluginStack = pluginStack;
  }
}

export interface ChildOptions {
  command: ChildCommand;
  maxFrameBytes: number;
  logTailLines: number;
  /** A label for messages: the plugin module. */
  label: string;
}

function describeExit(exit: ChildExit): string {
  if (exit.vanished) return "vanished";
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

export class PluginChild {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly startedAt = performance.now();
  readonly tail: LogTail;
  /** Settles when the process has exited. */
  readonly exited: Promise<ChildExit>;
  readonly #options: ChildOptions;
  #exit: ChildExit | undefined;
  #markExited!: (exit: ChildExit) => void;
  #terminated = false;
  #forced = false;
  #killTimer: ReturnType<typeof setTimeout> | undefined;
  #listener: ((message: WorkerMessage) => void) | undefined;
  #broken: ChildFailure | undefined;
  #onBroken: ((failure: ChildFailure) => void) | undefined;

  constructor(options: ChildOptions) {
    this.#options = options;
    this.tail = new LogTail(options.logTailLines);
    this.exited = new Promise((resolve) => (this.#markExited = resolve));
    const { file, args, env } = options.command;
    this.process = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"], detached: true, env });
    this.pid = this.process.pid ?? -1;
    this.process.on("error", (error) => {
      // Spawn failed (binary missing): no exit event follows.
      this.tail.push(new TextEncoder().encode(`${error.message}\n`));
      this.#finish(null, null);
    });
    this.process.on("exit", (code, signal) => {
      // Whatever the plugin started in its group goes with it.
      this.#signalGroup("SIGKILL");
      // Report the exit once stdout is drained, so that a last frame is not lost; a
      // grandchild that escaped the group could hold the pipe open, hence the cap.
      const finish = () => this.#finish(code, signal);
      const cap = setTimeout(finish, 1000);
      this.process.stdout!.once("close", () => {
        clearTimeout(cap);
        finish();
      });
      if (this.process.stdout!.closed) finish();
    });
    this.process.stdin!.on("error", () => {}); // EPIPE when the child is gone: its exit tells the story.
    this.process.stderr!.on("data", (chunk: Buffer) => this.tail.push(chunk));
    const decoder = new FrameDecoder(options.maxFrameBytes);
    this.process.stdout!.on("data", (chunk: Buffer) => {
      if (this.#broken) return;
      try {
        for (const frame of decoder.push(chunk)) this.#listener?.(fromBinary(WorkerMessageSchema, frame));
      } catch (error) {
        this.#break(new ChildFailure("protocol_error", `plugin ${options.label} broke the protocol: ${(error as Error).message}`));
      }
    });
  }

  get exit(): ChildExit | undefined {
    return this.#exit;
  }

  /** Waits for the hello frame with the plugin's manifest. */
  hello(): Promise<Hello> {
    return this.#next((message, resolve, reject) => {
      if (message.kind.case === "hello") resolve(message.kind.value);
      else if (message.kind.case === "failure") {
        const f = message.kind.value;
        reject(new ChildFailure("plugin_load_failed", `plugin ${this.#options.label} failed to load: ${f.name}: ${f.message}`, f.stack));
      } else reject(new ChildFailure("protocol_error", `plugin ${this.#options.label} sent ${message.kind.case} before hello`));
    }, "plugin_load_failed", "before saying hello");
  }

  /** Sends one call and waits for its result; progress goes to onProgress. */
  call(call: MessageInitShape<typeof CallSchema>, onProgress: (state: JsonValuePb | undefined) => void): Promise<Result> {
    const message = create(ServerMessageSchema, { kind: { case: "call", value: call } });
    this.process.stdin!.write(encodeFrame(toBinary(ServerMessageSchema, message)));
    return this.#next((message, resolve, reject) => {
      const kind = message.kind;
      if (kind.value && "callId" in kind.value && kind.value.callId !== call.callId) {
        reject(new ChildFailure("protocol_error", `plugin ${this.#options.label} answered call ${kind.value.callId}, expected ${call.callId}`));
      } else if (kind.case === "progress") onProgress(kind.value.state);
      else if (kind.case === "result") resolve(kind.value);
      else if (kind.case === "failure") reject(this.#pluginFailure(kind.value));
      else reject(new ChildFailure("protocol_error", `plugin ${this.#options.label} sent an unexpected ${kind.case}`));
    }, "plugin_exited", "before answering");
  }

  /** Closes stdin: the worker exits once its input ends. */
  endInput(): void {
    this.process.stdin!.end();
  }

  /**
   * SIGTERM to the process group, SIGKILL after sigtermTimeoutMs. Idempotent;
   * resolves when the process is gone.
   */
  terminate(sigtermTimeoutMs: number): Promise<ChildExit> {
    if (!this.#exit && !this.#terminated) {
      this.#terminated = true;
      this.#signalGroup("SIGTERM");
      this.#killTimer = setTimeout(() => {
        this.#forced = true;
        this.#signalGroup("SIGKILL");
      }, sigtermTimeoutMs);
    }
    return this.exited;
  }

  /** Reconciliation found the pid gone without an exit event. */
  markVanished(): void {
    this.#signalGroup("SIGKILL");
    this.#finish(null, null, true);
  }

  #pluginFailure(f: Failure): ChildFailure {
    if (f.name === "AbortError" && this.#terminated) return new ChildFailure("cancelled", "the action was cancelled", f.stack);
    return new ChildFailure("plugin_error", `${f.name}: ${f.message}`, f.stack);
  }

  #signalGroup(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, signal);
    } catch {
      // The group is already gone.
    }
  }

  #break(failure: ChildFailure): void {
    this.#broken = failure;
    this.#onBroken?.(failure);
    void this.terminate(0);
  }

  #finish(code: number | null, signal: NodeJS.Signals | null, vanished = false): void {
    if (this.#exit) return;
    clearTimeout(this.#killTimer);
    this.#exit = {
      code,
      signal,
      terminated: this.#terminated,
      forced: this.#forced,
      vanished,
      durationMs: performance.now() - this.startedAt,
    };
    this.#markExited(this.#exit);
  }

  /**
   * Feeds frames to `handle` until it settles; fails when the protocol breaks or the
   * child exits first.
   */
  #next<T>(
    handle: (message: WorkerMessage, resolve: (value: T) => void, reject: (error: ChildFailure) => void) => void,
    exitCode: ChildFailureCode,
    when: string,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        this.#listener = undefined;
        this.#onBroken = undefined;
        fn();
      };
      const fail = (error: ChildFailure) => settle(() => reject(error));
      if (this.#broken) return fail(this.#broken);
      this.#listener = (message) => handle(message, (value) => settle(() => resolve(value)), fail);
      this.#onBroken = fail;
      void this.exited.then((exit) => {
        // Let frames already read be handled first: stdout may still hold the answer.
        setImmediate(() => {
          if (this.#terminated && !this.#broken) fail(new ChildFailure("cancelled", "the action was cancelled"));
          else fail(new ChildFailure(exitCode, `plugin ${this.#options.label} ${describeExit(exit)} ${when}`));
        });
      });
    });
  }
}
