/**
 * Errors a plugin throws on purpose: a code of its own, which the action's error
 * carries (Action.error.code), a message and JSON details.
 * @module
 */
import type { JsonValue } from "./values.ts";

const mark = Symbol.for("plinth.sdk.PluginError");

/**
 * An error with a code of the plugin's choosing, e.g. `bad_input` or `quota.exceeded`:
 * lowercase letters, digits, `_`, `.` and `-`, at most 64 characters. It becomes the
 * action's `error.code` (a code the engine uses itself, such as `cancelled`, is
 * reported as `plugin_error`), with `message`, and `details` as `error.details`.
 *
 * @example
 * ```ts
 * if (rows.length === 0) throw new PluginError("no_rows", "the data set is empty", { source: "iris.inputs" });
 * ```
 */
export class PluginError extends Error {
  readonly code: string;
  readonly details: JsonValue | undefined;
  constructor(code: string, message: string, details?: JsonValue) {
    super(message);
    this.name = "PluginError";
    this.code = code;
    this.details = details;
    Object.defineProperty(this, mark, { value: true });
  }

  /** Whether `error` is a PluginError, from this copy of the SDK or another. */
  static is(error: unknown): error is PluginError {
    return typeof error === "object" && error !== null && (error as Record<symbol, unknown>)[mark] === true;
  }
}
