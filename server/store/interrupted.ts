/**
 * How an action ends when the server running it is gone: FAILED, interrupted, saying
 * why; data access that never finished cancelled with it. The engine uses it for what a
 * crashed server left behind, a cluster for what a lapsed server was running.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Action, ActionErrorSchema, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";

const ENDED = new Set([ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED]);

export function interruptedAction(action: Action, message: string): Action {
  const endTime = timestampNow();
  return create(ActionSchema, {
    ...action,
    status: ActionStatus.FAILED,
    error: create(ActionErrorSchema, { code: "interrupted", message }),
    dataAccess: action.dataAccess.map((entry) => (ENDED.has(entry.status) ? entry : { ...entry, status: ActionStatus.CANCELLED })),
    endTime,
    updateTime: endTime,
    queuePosition: 0,
  });
}
