/** plinth.v1.ActionService: thin handlers that call the engine and return, as the caller may see it. */
import type { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import type { ServiceImpl } from "./service-impl.ts";

export function actionService(engine: () => Engine): ServiceImpl<typeof ActionService> {
  return {
    async getAction(request, context) {
      return { action: await engine().getAction(request.actionId, request.view, context.caller) };
    },
    async listActions(request, context) {
      const { actions, next } = await engine().listActions(request, context.caller);
      return { actions, nextPageToken: next };
    },
    async waitAction(request, context) {
      return { action: await engine().waitAction(request.actionId, request.view, context.signal, context.caller) };
    },
    async cancelAction(request, context) {
      return { action: await engine().cancelAction(request.actionId, context.caller) };
    },
    async *watchAction(request, context) {
      for await (const action of engine().watchAction(request.actionId, context.signal, context.caller)) yield { action };
    },
  };
}
