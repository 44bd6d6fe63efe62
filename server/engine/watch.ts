/**
 * Watching the live state: WatchState (a snapshot or a resume, then every change) and
 * WatchAction (one action until it ends). "Subscribe, then read" happens here, in one
 * synchronous step, so that nothing falls in between and nothing comes twice. Watchers
 * owns the open streams: their queues, and the signal that ends them all at shutdown.
 *
 * Each change becomes one WatchStateResponse shared by every watcher (and so encoded
 * once); a watcher holds at most one pending change per key and `queueBytes` in all.
 */

import { getEventListeners, setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import { type Action, ActionSchema } from "../../gen/plinth/v1/action_pb.ts";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { ChangeKind, StateSchema, type WatchStateResponse, WatchStateResponseSchema } from "../../gen/plinth/v1/state_service_pb.ts";
import { encodedSize } from "../encoded.ts";
import { invalid, PlinthError } from "../errors.ts";
import type { Store } from "../store/store.ts";
import type { ChangeKind as Kind } from "./change-log.ts";
import { Coalesced, RESYNC } from "./coalesce.ts";
import { isEnded, type LiveTable } from "./live-table.ts";
import { checkRevision, requireId } from "./requests.ts";
import type { StateEvent, StatePublisher } from "./state-publisher.ts";

/** What the live state is to a watcher: the table's views, and the publisher's changes. */
interface State {
  table: LiveTable;
  publisher: StatePublisher;
}

export interface StateFilter {
  modelIds: string[];
  actionIds: string[];
  kinds: ChangeKind[];
}

/** Filter lists longer than this are refused: each id is checked on every change. */
const MAX_FILTER_IDS = 1000;

const kinds: Record<Kind, ChangeKind> = {
  model_upserted: ChangeKind.MODEL_UPSERTED,
  model_deleted: ChangeKind.MODEL_DELETED,
  action_upserted: ChangeKind.ACTION_UPSERTED,
};

interface Filter {
  /** No filter given: everything passes. */
  all: boolean;
  kind(kind: Kind): boolean;
  model(id: string): boolean;
  action(id: string, modelId: string): boolean;
}

/** The request's filters: each one given narrows the stream; together they all apply. */
function compile(filter: StateFilter): Filter {
  for (const [name, list] of [
    ["model_ids", filter.modelIds],
    ["action_ids", filter.actionIds],
    ["kinds", filter.kinds],
  ] as const) {
    if (list.length > MAX_FILTER_IDS)
      throw invalid(`${name}: at most ${MAX_FILTER_IDS} entries, got ${list.length}; watch without the filter instead`);
  }
  const models = new Set(filter.modelIds);
  const actions = new Set(filter.actionIds);
  const wanted = new Set(filter.kinds);
  return {
    all: models.size === 0 && actions.size === 0 && wanted.size === 0,
    kind: (kind) => wanted.size === 0 || wanted.has(kinds[kind]),
    model: (id) => actions.size === 0 && (models.size === 0 || models.has(id)),
    action: (id, modelId) => (actions.size === 0 || actions.has(id)) && (models.size === 0 || models.has(modelId)),
  };
}

function passes(filter: Filter, event: StateEvent): boolean {
  if (filter.all) return true;
  if (!filter.kind(event.kind)) return false;
  switch (event.kind) {
    case "action_upserted":
      return filter.action(event.action.id, event.action.modelId);
    case "model_deleted":
      return filter.model(event.modelId);
    case "model_upserted":
      return filter.model(event.model.id);
  }
}

function keyOf(event: StateEvent): string {
  switch (event.kind) {
    case "action_upserted":
      return `a:${event.action.id}`;
    case "model_deleted":
      return `m:${event.modelId}`;
    case "model_upserted":
      return `m:${event.model.id}`;
  }
}

/** One message per change, shared by every watcher that sends it. */
const messages = new WeakMap<StateEvent, WatchStateResponse>();

function messageOf(event: StateEvent): WatchStateResponse {
  let message = messages.get(event);
  if (!message) {
    const { revision } = event;
    const init =
      event.kind === "model_upserted"
        ? ({ case: "modelUpserted", value: event.model } as const)
        : event.kind === "model_deleted"
          ? ({ case: "modelDeleted", value: event.modelId } as const)
          : ({ case: "actionUpserted", value: event.action } as const);
    message = create(WatchStateResponseSchema, { revision, event: init });
    messages.set(event, message);
  }
  return message;
}

/** The snapshot as messages of at most pageBytes each; all but the last say `more`. */
function* snapshot({ table: live, publisher }: State, filter: Filter, reset: boolean, pageBytes: number): Generator<WatchStateResponse> {
  const revision = publisher.revision;
  const models: Model[] = [];
  const actions: Action[] = [];
  let bytes = 0;
  const page = (more: boolean) => {
    const state = create(StateSchema, { revision, models: models.splice(0), actions: actions.splice(0) });
    return create(WatchStateResponseSchema, { revision, reset, more, event: { case: "snapshot", value: state } });
  };
  // Read in one synchronous pass, then sent: the snapshot is the state at `revision`.
  const all: (Model | Action)[] = [];
  if (filter.kind("model_upserted")) for (const m of live.models()) if (filter.model(m.id)) all.push(m);
  if (filter.kind("action_upserted")) for (const a of live.actions()) if (filter.action(a.view.id, a.view.modelId)) all.push(a.view);
  for (const item of all) {
    const size = item.$typeName === "plinth.v1.Model" ? encodedSize(ModelSchema, item as Model) : encodedSize(ActionSchema, item as Action);
    if (bytes + size > pageBytes && models.length + actions.length > 0) {
      yield page(true);
      bytes = 0;
    }
    bytes += size;
    if (item.$typeName === "plinth.v1.Model") models.push(item as Model);
    else actions.push(item as Action);
  }
  yield page(false);
}

async function* watchState(
  state: State,
  store: Store,
  request: { from: bigint; filter: StateFilter },
  limits: { pageBytes: number; queueBytes: number },
  signals: AbortSignal[],
  watchers: Set<Coalesced<unknown>>,
): AsyncGenerator<WatchStateResponse> {
  const filter = compile(request.filter);
  const { table: live, publisher } = state;
  const queue = new Coalesced<StateEvent>(
    (push) =>
      publisher.subscribe((event) => {
        if (passes(filter, event)) push(keyOf(event), event, encodedSize(WatchStateResponseSchema, messageOf(event)));
      }),
    signals,
    limits.queueBytes,
  );
  watchers.add(queue);
  try {
    // Subscribed: now read, in the same synchronous step.
    const changes = request.from > 0n ? publisher.since(request.from) : undefined;
    if (changes) {
      const resumed: (WatchStateResponse | { retired: string; revision: bigint })[] = [];
      for (const change of changes) {
        if (change.kind === "action_upserted") {
          if (!filter.kind("action_upserted") || !filter.action(change.id, change.modelId)) continue;
          const current = live.action(change.id);
          if (current)
            resumed.push(create(WatchStateResponseSchema, { revision: change.revision, event: { case: "actionUpserted", value: current.view } }));
          else resumed.push({ retired: change.id, revision: change.revision });
          continue;
        }
        const model = live.model(change.id);
        if (!filter.kind(model ? "model_upserted" : "model_deleted") || !filter.model(change.id)) continue;
        resumed.push(
          create(WatchStateResponseSchema, {
            revision: change.revision,
            event: model ? { case: "modelUpserted", value: model } : { case: "modelDeleted", value: change.id },
          }),
        );
      }
      for (const message of resumed) {
        if (!("retired" in message)) yield message;
        else {
          // Ended and retired from the live state since: the history has its last version.
          const stored = await store.getAction(message.retired, false);
          if (stored) yield create(WatchStateResponseSchema, { revision: message.revision, event: { case: "actionUpserted", value: stored.action } });
        }
      }
    } else {
      yield* snapshot(state, filter, request.from > 0n, limits.pageBytes);
    }
    for await (const event of queue) {
      if (event === RESYNC) yield* snapshot(state, filter, true, limits.pageBytes);
      else yield messageOf(event);
    }
  } finally {
    queue.close();
    watchers.delete(queue);
  }
}

/**
 * The action now (read by `current`), then each update until it ends: the latest when
 * the reader is behind, or (`every`) each one in order, up to `queueBytes` behind.
 */
async function* watchAction(
  publisher: StatePublisher,
  actionId: string,
  current: () => Promise<Action>,
  signals: AbortSignal[],
  every: { queueBytes: number } | undefined,
): AsyncGenerator<Action> {
  let seq = 0;
  const updates = new Coalesced<Action>(
    (push) =>
      publisher.subscribe((event) => {
        if (event.kind !== "action_upserted" || event.action.id !== actionId) return;
        if (every) push(String(seq++), event.action, encodedSize(ActionSchema, event.action));
        else push(actionId, event.action);
      }),
    signals,
    every?.queueBytes,
  );
  try {
    const first = await current();
    yield first;
    if (isEnded(first)) return;
    for await (const action of updates) {
      // Only with `every`: a reader this far behind has lost updates, and is told so.
      if (action === RESYNC) {
        throw new PlinthError(
          "queue_full",
          `the watcher of action ${actionId} fell more than ${every!.queueBytes} bytes of updates behind (engine.watcher_queue_mb) and missed some; read faster, or watch with engine.progress_interval above 0 to get the latest update instead of each`,
        );
      }
      yield action;
      if (isEnded(action)) return;
    }
  } finally {
    updates.close();
  }
}

export interface WatchLimits {
  /** Snapshots come in messages of at most this size. */
  pageBytes: number;
  /** A watcher this far behind gets a fresh snapshot instead. */
  queueBytes: number;
  /** A WatchAction stream gets each update of its action in order (engine.progress_interval 0), not the latest. */
  everyUpdate: boolean;
}

/** The open streams of one engine. */
export class Watchers {
  readonly #state: State;
  readonly #store: Store;
  readonly #limits: WatchLimits;
  readonly #queues = new Set<Coalesced<unknown>>();
  /** Ends every stream once the server stops. */
  readonly #stopping = new AbortController();

  constructor(state: State, store: Store, limits: WatchLimits) {
    this.#state = state;
    this.#store = store;
    this.#limits = limits;
    setMaxListeners(0, this.#stopping.signal); // One listener per open stream.
  }

  /** Open WatchState streams, the changes (and bytes) waiting to be sent to them, and the streams the stop would end. */
  get stats(): { watchers: number; pending: number; pendingBytes: number; stopListeners: number } {
    let pending = 0;
    let pendingBytes = 0;
    for (const queue of this.#queues) {
      pending += queue.pending.count;
      pendingBytes += queue.pending.bytes;
    }
    return { watchers: this.#queues.size, pending, pendingBytes, stopListeners: getEventListeners(this.#stopping.signal, "abort").length };
  }

  /** The state stream: a snapshot (or what changed since `from`), then every change. */
  watchState(request: { from: bigint; filter: StateFilter }, signal: AbortSignal): AsyncIterable<WatchStateResponse> {
    checkRevision("from_revision", request.from);
    return watchState(this.#state, this.#store, request, this.#limits, [signal, this.#stopping.signal], this.#queues);
  }

  /** The action now (read by `current`), then each update until it ends. */
  watchAction(actionId: string, current: () => Promise<Action>, signal: AbortSignal): AsyncIterable<Action> {
    requireId("action_id", actionId);
    const every = this.#limits.everyUpdate ? { queueBytes: this.#limits.queueBytes } : undefined;
    return watchAction(this.#state.publisher, actionId, current, [signal, this.#stopping.signal], every);
  }

  /** Ends every stream (their watchers have seen the last updates). */
  close(): void {
    this.#stopping.abort();
  }
}
