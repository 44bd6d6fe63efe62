/** A failure recorded on the action as it is: its code, message and the plugin's output. */
import { create } from "@bufbuild/protobuf";
import { type ActionError, ActionErrorSchema } from "../../gen/plinth/v1/action_pb.ts";
import type { ActionErrorCode } from "./action-errors.ts";

export class ActionFailure extends Error {
  readonly error: ActionError;
  readonly logTail: string[];

  constructor(error: { code: ActionErrorCode; message: string; stack?: string }, logTail: string[] = [], cause?: unknown) {
    super(error.message, { cause });
    this.name = "ActionFailure";
    this.error = create(ActionErrorSchema, error);
    this.logTail = logTail;
  }
}
