/** plinth.v1.ActionService: thin handlers that call the engine and return. */
import type { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import type { ServiceImpl } from "./service-impl.ts";

export function actionService(engine: () => Engine): ServiceImpl<typeof ActionService> {
  return {
    async getAction(request) {
      return { action: await engine().getAction(request.actionId, request.view) };
    },
    async listActions(request) {
      const { actions, next } = await engine().listActions(request);
      return { actions, nextPageToken: next };
    },
    async waitAction(request, context) {
      return { action: await engine().waitAction(request.actionId, request.view, context.signal) };
    },
    async cancelAction(request, context) {
      return { action: await engine().cancelAction(request.actionId, context.caller) };
    },
    async *watchAction(request, context) {
      for await (const action of engine().watchAction(request.actionId, context.signal)) yield { action };
    },
  };
}
