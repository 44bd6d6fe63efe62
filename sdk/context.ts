/**
 * The context every plugin function is called with.
 * @module
 */
import type { JsonValue } from "./values.ts";

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
 * @example
 * ```ts
 * async function fit(ctx: Context, model: Model, args: Args) {
 *   for (let epoch = 0; epoch < 10; epoch++) {
 *     ctx.signal.throwIfAborted();
 *     ctx.report({ epoch });
 *   }
 *   return model;
 * }
 * ```
 */
export interface Context {
  /**
   * Publishes the function's progress as the action's state. Cheap to call often:
   * only the latest state is sent, at a bounded rate.
   */
  report(state: JsonValue): void;
  /** Aborted when the action is cancelled (the child got SIGTERM). */
  readonly signal: AbortSignal;
  /** Writes to the action's log tail. */
  readonly log: Logger;
  /** The id of this call, unique per child. */
  readonly callId: string;
}

/** Writes log lines as one JSON object per line, to the given sink. */
export function createLogger(write: (line: string) => void): Logger {
  const at = (level: string) => (message: string, fields?: Record<string, JsonValue>) => write(JSON.stringify({ level, msg: message, ...fields }));
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
