/** plinth.v1.StateService: the snapshot, and the stream of changes with resume and filters. */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ChangeKind,
  StateSchema,
  StateService,
  type WatchStateRequest,
  type WatchStateResponse,
  WatchStateResponseSchema,
} from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import type { StateEvent } from "../engine/state-hub.ts";
import { Coalesced } from "./coalesce.ts";
import type { ServiceImpl } from "./service-impl.ts";

type WatchMessage = MessageInitShape<typeof WatchStateResponseSchema>;

const kinds = {
  model_upserted: ChangeKind.MODEL_UPSERTED,
  model_deleted: ChangeKind.MODEL_DELETED,
  action_upserted: ChangeKind.ACTION_UPSERTED,
} as const;

/** One message per change, shared by every watcher that sends it (and so encoded once). */
const messages = new WeakMap<StateEvent, WatchStateResponse>();

function toMessage(event: StateEvent): WatchStateResponse {
  let message = messages.get(event);
  if (!message) messages.set(event, (message = create(WatchStateResponseSchema, messageOf(event))));
  return message;
}

function messageOf(event: StateEvent): WatchMessage {
  const { revision } = event;
  switch (event.kind) {
    case "model_upserted":
      return { revision, event: { case: "modelUpserted", value: event.model } };
    case "model_deleted":
      return { revision, event: { case: "modelDeleted", value: event.modelId } };
    case "action_upserted":
      return { revision, event: { case: "actionUpserted", value: event.action } };
  }
}

/** One key per model and per action: a slow reader gets the latest of each. Computed once per change. */
const keys = new WeakMap<StateEvent, string>();
function keyOf(event: StateEvent): string {
  let key = keys.get(event);
  if (key === undefined) keys.set(event, (key = keyFor(event)));
  return key;
}

function keyFor(event: StateEvent): string {
  switch (event.kind) {
    case "action_upserted":
      return `action:${event.action.id}`;
    case "model_deleted":
      return `model:${event.modelId}`;
    case "model_upserted":
      return `model:${event.model.id}`;
  }
}

interface Filter {
  /** No filter given: everything passes. */
  all: boolean;
  model(id: string): boolean;
  action(id: string, modelId: string): boolean;
  event(event: StateEvent): boolean;
}

/** The request's filters: each one given narrows the stream; together they all apply. */
function filterOf(request: WatchStateRequest): Filter {
  const models = new Set(request.modelIds);
  const actions = new Set(request.actionIds);
  const wanted = new Set(request.kinds);
  const model = (id: string) => actions.size === 0 && (models.size === 0 || models.has(id));
  const action = (id: string, modelId: string) => (actions.size === 0 || actions.has(id)) && (models.size === 0 || models.has(modelId));
  return {
    all: models.size === 0 && actions.size === 0 && wanted.size === 0,
    model,
    action,
    event(event) {
      if (wanted.size > 0 && !wanted.has(kinds[event.kind])) return false;
      switch (event.kind) {
        case "action_upserted":
          return action(event.action.id, event.action.modelId);
        case "model_deleted":
          return model(event.modelId);
        case "model_upserted":
          return model(event.model.id);
      }
    },
  };
}

/** What the open WatchState streams hold: for tests and metrics. */
export interface WatchStats {
  watchers: number;
  /** Changes waiting to be sent, over all watchers: at most one per model and action each. */
  pending: number;
}

/** `stopping` ends the streams when the server shuts down; `watchers` tracks them. */
export function stateService(
  engine: () => Engine,
  stopping: AbortSignal,
  watchers: Set<Coalesced<StateEvent>> = new Set(),
): ServiceImpl<typeof StateService> {
  return {
    async getState() {
      return { state: engine().getState() };
    },
    async *watchState(request, context) {
      const e = engine();
      const filter = filterOf(request);
      // Subscribe, then read the history or the snapshot, in one synchronous step:
      // nothing falls in between, and nothing comes twice.
      const updates = new Coalesced<StateEvent>(
        (push) =>
          e.hub.subscribe(
            filter.all
              ? (event) => push(keyOf(event), event)
              : (event) => {
                  if (filter.event(event)) push(keyOf(event), event);
                },
          ),
        AbortSignal.any([context.signal, stopping]),
      );
      watchers.add(updates);
      try {
        const from = request.fromRevision;
        const missed = from > 0n ? e.hub.since(from) : undefined;
        if (missed) {
          // Only what changed since `from`: the latest version of each model and action.
          const latest = new Map<string, StateEvent>();
          for (const event of missed) {
            if (!filter.event(event)) continue;
            latest.delete(keyOf(event));
            latest.set(keyOf(event), event);
          }
          for (const event of latest.values()) yield toMessage(event);
        } else {
          const state = e.getState();
          const snapshot = create(StateSchema, {
            revision: state.revision,
            models: state.models.filter((m) => filter.model(m.id) && (request.kinds.length === 0 || request.kinds.includes(ChangeKind.MODEL_UPSERTED))),
            actions: state.actions.filter((a) => filter.action(a.id, a.modelId) && (request.kinds.length === 0 || request.kinds.includes(ChangeKind.ACTION_UPSERTED))),
          });
          yield { revision: snapshot.revision, event: { case: "snapshot", value: snapshot }, reset: from > 0n };
        }
        for await (const event of updates) yield toMessage(event);
      } finally {
        updates.close();
        watchers.delete(updates);
      }
    },
  };
}
