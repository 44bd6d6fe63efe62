/**
 * How an action ends when the server running it is gone: FAILED, interrupted, saying
 * why; data access that never finished cancelled with it. The engine uses it for what a
 * crashed server left behind, a cluster for what a lapsed server was running.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Action, ActionErrorSchema, ActionResultSchema, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { modelMessage } from "./model-message.ts";
import { isEnded } from "./records.ts";
import type { ModelMeta } from "./store.ts";

export function interruptedAction(action: Action, message: string): Action {
  const endTime = timestampNow();
  return create(ActionSchema, {
    ...action,
    status: ActionStatus.FAILED,
    error: create(ActionErrorSchema, { code: "interrupted", message }),
    dataAccess: action.dataAccess.map((entry) => (isEnded(entry) ? entry : { ...entry, status: ActionStatus.CANCELLED })),
    endTime,
    updateTime: endTime,
    queuePosition: 0,
  });
}

/**
 * As interruptedAction, unless the store holds a revision the action made (`made`):
 * then it SUCCEEDED with it. A revision commits with its action's end; a server of an
 * older Plinth committed them apart, and one that died between the two left both.
 */
export function goneServerEnd(action: Action, message: string, made: ModelMeta | undefined): Action {
  if (!made) return interruptedAction(action, message);
  const endTime = timestampNow();
  return create(ActionSchema, {
    ...action,
    status: ActionStatus.SUCCEEDED,
    modelId: made.id,
    result: create(ActionResultSchema, { model: modelMessage(made) }),
    endTime,
    updateTime: endTime,
    queuePosition: 0,
  });
}
