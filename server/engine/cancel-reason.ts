/** Why an action is being stopped: the reason its AbortSignal carries. */
import { ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";

export type CancelledBy = "CancelAction" | "timeout" | "shutdown";

const mark = Symbol.for("plinth.CancelReason");

export class CancelReason extends PlinthError {
  readonly by: CancelledBy;
  /** Who called CancelAction ("" for a timeout, a shutdown, or an anonymous caller). */
  readonly caller: string;
  /** The status the action had when the stop began, and when (performance.now()): what the cancel outcome reports. */
  readonly phase: ActionStatus;
  readonly at: number;
  readonly [mark] = true;

  constructor(by: CancelledBy, message: string, caller = "", phase: ActionStatus = ActionStatus.QUEUED, at = performance.now()) {
    super(by === "timeout" ? "deadline_exceeded" : by === "shutdown" ? "shutting_down" : "cancelled", message);
    this.by = by;
    this.caller = caller;
    this.phase = phase;
    this.at = at;
  }

  /** The same reason, for a stop that begins now, in `phase`. */
  startingIn(phase: ActionStatus): CancelReason {
    return new CancelReason(this.by, this.message, this.caller, phase);
  }

  static isReason(value: unknown): value is CancelReason {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[mark] === true;
  }
}
