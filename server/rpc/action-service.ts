/** plinth.v1.ActionService. */
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { isEnded } from "../engine/action-run.ts";
import type { Engine } from "../engine/engine.ts";
import { invalid } from "../errors.ts";
import { Coalesced } from "./coalesce.ts";
import type { ServiceImpl } from "./service-impl.ts";

/** `stopping` ends the streams when the server shuts down. */
export function actionService(engine: () => Engine, stopping: AbortSignal): ServiceImpl<typeof ActionService> {
  return {
    async getAction(request) {
      return { action: await engine().getAction(request.actionId) };
    },
    async listActions(request) {
      const { actions, next } = await engine().listActions(request);
      return { actions, nextPageToken: next };
    },
    async waitAction(request, context) {
      return { action: await engine().waitAction(request.actionId, context.signal) };
    },
    async cancelAction(request) {
      return { action: await engine().cancelAction(request.actionId) };
    },
    async *watchAction(request, context) {
      const e = engine();
      if (!request.actionId) throw invalid("action_id is required");
      // Subscribe before reading the action so that no update falls in between.
      const updates = new Coalesced<Action>(
        (push) =>
          e.hub.subscribe((event) => {
            if (event.kind === "action_upserted" && event.action.id === request.actionId) push(event.action.id, event.action);
          }),
        AbortSignal.any([context.signal, stopping]),
      );
      try {
        const first = await e.getAction(request.actionId);
        yield { action: first };
        if (isEnded(first)) return;
        for await (const action of updates) {
          yield { action };
          if (isEnded(action)) return;
        }
      } finally {
        updates.close();
      }
    },
  };
}
