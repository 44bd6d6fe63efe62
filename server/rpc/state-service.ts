/** plinth.v1.StateService. */
import { clone, type MessageInitShape } from "@bufbuild/protobuf";
import { ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { StateService, type WatchStateResponseSchema } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import type { StateEvent } from "../engine/state-hub.ts";
import { Coalesced } from "./coalesce.ts";
import type { ServiceImpl } from "./service-impl.ts";

type WatchMessage = MessageInitShape<typeof WatchStateResponseSchema>;

function toMessage(event: StateEvent): WatchMessage {
  const { revision } = event;
  switch (event.kind) {
    case "model_upserted":
      return { revision, event: { case: "modelUpserted", value: clone(ModelSchema, event.model) } };
    case "model_deleted":
      return { revision, event: { case: "modelDeleted", value: event.modelId } };
    case "action_upserted":
      return { revision, event: { case: "actionUpserted", value: event.action } };
  }
}

function keyOf(event: StateEvent): string {
  return event.kind === "action_upserted" ? `action:${event.action.id}` : `model:${event.kind === "model_deleted" ? event.modelId : event.model.id}`;
}

/** `stopping` ends the streams when the server shuts down. */
export function stateService(engine: () => Engine, stopping: AbortSignal): ServiceImpl<typeof StateService> {
  return {
    async getState() {
      return { state: engine().getState() };
    },
    async *watchState(_request, context) {
      const e = engine();
      // Subscribe and take the snapshot in one synchronous step: nothing falls in between.
      const updates = new Coalesced<StateEvent>((push) => e.hub.subscribe((event) => push(keyOf(event), event)), AbortSignal.any([context.signal, stopping]));
      try {
        const snapshot = e.getState();
        yield { revision: snapshot.revision, event: { case: "snapshot", value: snapshot } };
        for await (const event of updates) yield toMessage(event);
      } finally {
        updates.close();
      }
    },
  };
}
