/**
 * The context every plugin function is called with.
 * @module
 */
import type { JsonValue, PluginValue } from "./values.ts";

/** The most a checkpoint may hold, encoded (JSON, bytes or tensors): 1 MiB. */
export const MAX_CHECKPOINT_BYTES = 1 << 20;

/** Where a plugin writes its own log lines; they end up in the action's log tail. */
export interface Logger {
  debug(message: string, fields?: Record<string, JsonValue>): void;
  info(message: string, fields?: Record<string, JsonValue>): void;
  warn(message: string, fields?: Record<string, JsonValue>): void;
  error(message: string, fields?: Record<string, JsonValue>): void;
}

/**
 * Passed as the first argument of every plugin function.
 *
 * Plugin functions run on a thread of their own in the child, so a CPU-bound loop
 * still reports its progress and sees its cancel: `ctx.report` sends at most one
 * update per progress interval as soon as one is due, and `ctx.signal` (or
 * `ctx.checkpoint()`) knows of a cancel the moment it comes, without waiting for the
 * event loop.
 *
 * @example
 * ```ts
 * function fit(ctx: Context, model: Model, [rows]: Args) {
 *   for (let i = 0; i < (rows as number[]).length; i++) {
 *     ctx.checkpoint(); // throws once the action is cancelled
 *     ctx.report({ done: i, total: (rows as number[]).length });
 *   }
 *   return model;
 * }
 * ```
 */
export interface Context<State = JsonValue> {
  /**
   * Publishes the function's progress as the action's state. Cheap to call often,
   * even in a tight loop: only the latest state is sent, at a bounded rate. Typed by
   * the function's `state` schema, when it declares one.
   */
  report(state: State): void;
  /**
   * Says the call is alive without a state to report, for a long step that reports
   * nothing (a library's training loop): with the plugin's `heartbeat_timeout` set, a
   * call that neither reports nor heartbeats for that long is stopped and fails
   * `stalled`. Cheap to call often: at most a few go out a second.
   */
  heartbeat(): void;
  /** Aborted when the action is cancelled (the child got SIGTERM); `aborted` and `throwIfAborted()` see it at once. */
  readonly signal: AbortSignal;
  /** Writes to the action's log tail. */
  readonly log: Logger;
  /** The id of this call, unique per child. */
  readonly callId: string;
  /** What this call is part of: its action, model, call kind and attempt. */
  readonly info: CallInfo;
  /**
   * Waits `ms` milliseconds, or rejects with the cancel's reason as soon as the action
   * is cancelled. Leaves no listener behind.
   *
   * @example
   * ```ts
   * await ctx.sleep(100);
   * ```
   */
  sleep(ms: number): Promise<void>;
  /**
   * Throws the cancel's reason if the action was cancelled; call it in long loops.
   *
   * @example
   * ```ts
   * for (const row of rows) { ctx.checkpoint(); work(row); }
   * ```
   */
  checkpoint(): void;
  /**
   * As `checkpoint()`, and stores `value` (JSON, bytes or tensors, at most 1 MiB encoded)
   * with the action: if this attempt fails and the action's retry policy runs it again —
   * after a crash of the child, of the server, or on another server of a cluster — the
   * next attempt gets it as `ctx.info.checkpoint`. Resolves once the server has stored
   * it; rejects when it could not (too large, or a data-access call, which has no next
   * attempt of its own). Only the latest checkpoint is kept.
   *
   * @example
   * ```ts
   * const start = (ctx.info.checkpoint as { epoch: number } | undefined)?.epoch ?? 0;
   * for (let epoch = start; epoch < epochs; epoch++) {
   *   weights = train(weights);
   *   await ctx.checkpoint({ epoch: epoch + 1, weights });
   * }
   * ```
   */
  checkpoint(value: PluginValue): Promise<void>;
}

/** What a call is part of. */
export interface CallInfo {
  /** The action the call belongs to (a data-access call: the action it fetches for). */
  readonly actionId: string;
  /** The model the action is on; "" for a create (and the data access of a create). */
  readonly modelId: string;
  /** The model type or data-access function being called. */
  readonly target: string;
  readonly call: "instantiate" | "fit" | "predict" | "data_access";
  /** 1 for the first attempt, counting up with each retry (the action's retry policy). */
  readonly attempt: number;
  /** The last checkpoint an earlier attempt of the action stored (`ctx.checkpoint(value)`); undefined on a first attempt, or when none did. */
  readonly checkpoint?: PluginValue;
}

/** Builds a Context on a signal; sleep and checkpoint follow it, and a checkpoint's value goes to `store`. @internal */
export function createContext(
  fields: Pick<Context, "callId" | "info" | "signal" | "log" | "report" | "heartbeat">,
  store: (value: PluginValue) => Promise<void> = () => Promise.reject(new Error("checkpoints are not kept here")),
): Context {
  const { signal, ...rest } = fields;
  function checkpoint(): void;
  function checkpoint(value: PluginValue): Promise<void>;
  function checkpoint(...value: [PluginValue?]): Promise<void> | undefined {
    signal.throwIfAborted();
    return value.length === 0 ? undefined : store(value[0] as PluginValue);
  }
  return {
    ...rest,
    signal,
    sleep: (ms) =>
      new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(signal.reason);
        const onAbort = () => {
          clearTimeout(timer);
          reject(signal.reason);
        };
        const timer = setTimeout(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        }, ms);
        signal.addEventListener("abort", onAbort, { once: true });
      }),
    checkpoint,
  };
}

/** Writes log lines as one JSON object per line, to the given sink; `base` fields on every line. */
export function createLogger(write: (line: string) => void, base?: Record<string, JsonValue>): Logger {
  const at = (level: string) => (message: string, fields?: Record<string, JsonValue>) =>
    write(JSON.stringify({ level, msg: message, ...base, ...fields }));
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
