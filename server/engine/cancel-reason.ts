/** Why an action is being stopped: the reason its AbortSignal carries. */
import { PlinthError } from "../errors.ts";

export type CancelledBy = "CancelAction" | "timeout" | "shutdown";

const mark = Symbol.for("plinth.CancelReason");

export class CancelReason extends PlinthError {
  readonly by: CancelledBy;
  /** Who called CancelAction ("" for a timeout, a shutdown, or an anonymous caller). */
  readonly caller: string;
  readonly [mark] = true;

  constructor(by: CancelledBy, message: string, caller = "") {
    super(by === "timeout" ? "deadline_exceeded" : by === "shutdown" ? "shutting_down" : "cancelled", message);
    this.by = by;
    this.caller = caller;
  }

  static isReason(value: unknown): value is CancelReason {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[mark] === true;
  }
}
