/** plinth.v1.StateService: thin handlers that call the engine and return, as the caller may see it. */
import { create } from "@bufbuild/protobuf";
import { StateSchema, type StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import type { ServiceImpl } from "./service-impl.ts";

export function stateService(engine: () => Engine): ServiceImpl<typeof StateService> {
  return {
    async getState(request, context) {
      const { next, ...state } = engine().getState(request.pageToken, context.caller);
      return { state: create(StateSchema, state), nextPageToken: next };
    },
    async *watchState(request, context) {
      const filter = { modelIds: request.modelIds, actionIds: request.actionIds, kinds: request.kinds };
      yield* engine().watchState({ from: request.fromRevision, filter }, context.signal, context.caller);
    },
  };
}
