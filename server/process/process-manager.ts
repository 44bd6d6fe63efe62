/**
 * Runs plugin calls in child processes, never more than maxChildren alive at once
 * (handshakes and data-access sub-calls included), the rest waiting in a FIFO queue.
 * Knows nothing of gRPC or of models: a call goes in, a result or a ChildFailure
 * comes out.
 */
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import type { CallKind, Hello, Result, Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError } from "../errors.ts";
import { ChildFailure, PluginChild } from "./child.ts";
import { childCommand, type PluginTarget } from "./runtimes.ts";
import { Slots } from "../slots.ts";

export interface ProcessManagerOptions {
  maxChildren: number;
  sigtermTimeoutMs: number;
  checkChildrenPeriodMs: number;
  maxFrameBytes: number;
  logTailLines: number;
  /** Deno's cache directory for deno children. */
  denoDir: string;
  logger: Logger;
}

export interface CallOptions {
  /** Aborting it cancels the call: dequeued at once if waiting, else SIGTERM then SIGKILL. */
  signal?: AbortSignal;
  /** The child is running the call (it had to wait for a slot until now). */
  onStart?: (pid: number) => void;
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
}

export class ProcessManager {
  readonly #options: ProcessManagerOptions;
  readonly #slots: Slots;
  readonly #children = new Set<PluginChild>();
  readonly #timer: ReturnType<typeof setInterval>;
  #nextCallId = 1;
  #closed = false;

  constructor(options: ProcessManagerOptions) {
    this.#options = options;
    this.#slots = new Slots(options.maxChildren);
    this.#timer = setInterval(() => this.#reconcile(), options.checkChildrenPeriodMs);
    this.#timer.unref();
  }

  /** Children alive now. */
  get live(): number {
    return this.#children.size;
  }

  /** Calls waiting for a slot. */
  get queued(): number {
    return this.#slots.waiting;
  }

  /** Pids of the children alive now. */
  pids(): number[] {
    return [...this.#children].map((c) => c.pid);
  }

  /** Starts the plugin module and reads its manifest. */
  async describe(target: PluginTarget, signal?: AbortSignal): Promise<Hello> {
    using _permit = await this.#slots.acquire(signal);
    const child = this.#spawn(target);
    try {
      const hello = await child.hello();
      child.endInput();
      await child.exited;
      return hello;
    } catch (error) {
      await child.terminate(this.#options.sigtermTimeoutMs);
      throw this.#withTail(error, child);
    }
  }

  /** Runs one call in a new child. Rejects with ChildFailure, or with the signal's reason if cancelled while queued. */
  async call(
    target: PluginTarget,
    call: PluginCall,
    options: CallOptions = {},
  ): Promise<CallOutcome> {
    const { signal } = options;
    using _permit = await this.#slots.acquire(signal);
    signal?.throwIfAborted();
    const child = this.#spawn(target);
    const onAbort = () => void child.terminate(this.#options.sigtermTimeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      options.onStart?.(child.pid);
      await child.hello();
      const result = await child.call({ ...call, callId: String(this.#nextCallId++) }, (state) =>
        options.onProgress?.(state, child.tail.lines()),
      );
      child.endInput();
      // The slot frees only when the process is gone.
      await child.exited;
      return { result, logTail: child.tail.lines() };
    } catch (error) {
      await child.terminate(this.#options.sigtermTimeoutMs);
      throw this.#withTail(error, child);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Refuses new calls, fails queued ones, stops every child and waits until all are gone. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#slots.close();
    await Promise.all([...this.#children].map((c) => c.terminate(this.#options.sigtermTimeoutMs)));
  }

  #spawn(target: PluginTarget): PluginChild {
    if (this.#closed) throw new PlinthError("shutting_down", "the server is shutting down");
    const { maxFrameBytes, logTailLines, denoDir } = this.#options;
    const child = new PluginChild({
      command: childCommand(target, maxFrameBytes, denoDir),
      maxFrameBytes,
      logTailLines,
      label: target.module,
    });
    this.#children.add(child);
    void child.exited.then((exit) => {
      this.#children.delete(child);
      this.#options.logger.debug({ pid: child.pid, module: target.module, ...exit }, "plugin child exited");
    });
    return child;
  }

  #withTail(error: unknown, child: PluginChild): unknown {
    if (error instanceof ChildFailure) {
      error.logTail = child.tail.lines();
      error.exit = child.exit;
    }
    return error;
  }

  /** Compares our books with the operating system: a child whose pid is gone without an exit event is failed and freed. */
  #reconcile(): void {
    for (const child of this.#children) {
      if (child.exit) continue;
      try {
        process.kill(child.pid, 0);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ESRCH") {
          this.#options.logger.warn({ pid: child.pid }, "plugin child vanished without an exit event");
          child.markVanished();
        }
      }
    }
  }
}
