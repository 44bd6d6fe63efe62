/**
 * The table half of the live state: every model, the actions not yet ended and the
 * recently ended ones, their byte counts, what waits (max_queue) and in which order
 * (queue_position), and retention. The one owner of it: everything else reads immutable
 * views and reports changes here.
 *
 * Views are frozen and never changed once handed out: a change makes a new view that
 * shares every part it did not change (the arguments above all). Payloads are held
 * once, in the LiveAction, and bounded in bytes: admission refuses actions beyond
 * max_inflight_mb, and ended actions retire (count, age, bytes), oldest first.
 *
 * Given a publisher (one server), the table publishes each change as it makes it. Without
 * one (a cluster), the feed publishes, in the database's order and with its revisions, so
 * that every server tells the same story: this server's own changes update its views at
 * once and are published when the feed brings them back; other servers' actions are held
 * as views only (remote).
 */
import { type Timestamp, timestampNow, type Value } from "@bufbuild/protobuf/wkt";
import { type Action, ActionStatus, type DataAccessProgress, type StatePoint } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { PlinthError } from "../errors.ts";
import { DEFAULT_PRIORITY, isEnded } from "../store/records.ts";
import type { CallArgs } from "./args.ts";
import type { JsonForm, Payload } from "./payloads.ts";
import type { StatePublisher } from "./state-publisher.ts";
import { StateSeries } from "./state-series.ts";

/** What a change of an action may set; its update time is now unless given (as the store has it already). */
export type ActionPatch = Partial<
  Pick<
    Action,
    | "status"
    | "modelId"
    | "dataAccess"
    | "state"
    | "result"
    | "error"
    | "startTime"
    | "endTime"
    | "updateTime"
    | "logTail"
    | "cancel"
    | "modelRevision"
    | "batch"
    | "attempt"
    | "nextAttemptTime"
    | "attempts"
    | "checkpoint"
  >
>;

/** A live action: its latest view and the payloads the view summarizes. */
export interface LiveAction {
  /** The latest view: arguments and result above inline_payload_bytes as summaries. */
  readonly view: Action;
  readonly args: CallArgs;
  /** The result's payload once the action has one. */
  readonly result: Payload | undefined;
  /** The form a JSON result shows in. */
  readonly jsonForm: JsonForm;
  /** What it holds: payloads, log tail, the view's own fields. */
  readonly bytes: number;
  /** Another server runs it (a cluster): its view is what the feed brought, its payloads are in the store. */
  readonly remote?: boolean;
}

const NO_ARGS: CallArgs = Object.freeze({ args: [], kwargs: {} });

export interface LiveTableOptions {
  /** Ended actions stay live while there are at most this many... */
  retainActions: number;
  /** ...they ended at most this long ago... */
  retainActionsMs: number;
  /** ...and they hold at most this many bytes together. */
  retainBytes: number;
  /** Actions waiting (queued or accessing data) at most... */
  maxQueue: number;
  /** ...and per caller. */
  maxQueuePerCaller: number;
  /** Bytes held by actions not yet ended, at most. */
  maxInflightBytes: number;
}

/** Which statuses are ended is the store's records' rule (one definition); the engine's modules find it here too. */
export { isEnded };

/** Waiting for something, and so counted against max_queue: its model, a child, or its data. */
const WAITING = new Set([ActionStatus.QUEUED, ActionStatus.ACCESSING_DATA]);

/** What an action holds besides its payloads: its fields, log tail, error. */
function ownBytes(view: Action): number {
  let n = 512 + view.dataAccess.length * 128;
  for (const line of view.logTail) n += line.length;
  for (const entry of view.dataAccess) for (const line of entry.logTail) n += line.length;
  if (view.error) n += view.error.message.length + view.error.stack.length;
  return n;
}

function payloadBytes(args: CallArgs): number {
  let n = 0;
  const visit = (node: CallArgs["args"][number]) => {
    if (node.kind === "data_access") {
      node.args.forEach(visit);
      Object.values(node.kwargs).forEach(visit);
    } else n += node.bytes;
  };
  args.args.forEach(visit);
  Object.values(args.kwargs).forEach(visit);
  return n;
}

export class LiveTable {
  readonly #o: LiveTableOptions;
  /** One server's: every change is published as it is made. A cluster's feed publishes instead. */
  readonly #publisher: StatePublisher | undefined;
  readonly #models = new Map<string, Model>();
  readonly #actions = new Map<string, LiveAction>();
  /** Each live action's own reported states over time (Action.states), while it is live. */
  readonly #states = new Map<string, StateSeries>();
  /** Ended actions still live, with when they ended, oldest first. */
  readonly #ended = new Map<string, number>();
  #endedBytes = 0;
  #inflightBytes = 0;
  /** Queued or accessing data: what max_queue counts... */
  readonly #waiting = new Set<string>();
  /** ...and, by who started them, what queued_per_caller counts. */
  readonly #waitingBy = new Map<string, number>();
  /** Queued, in the order they became queued: what queue_position counts. */
  readonly #queued = new Set<string>();

  constructor(options: LiveTableOptions, publisher?: StatePublisher) {
    this.#o = options;
    this.#publisher = publisher;
  }

  /** Actions waiting for their model, a child or their data. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Bytes held by actions not yet ended, and by ended ones still live. */
  get bytes(): { inflight: number; ended: number } {
    return { inflight: this.#inflightBytes, ended: this.#endedBytes };
  }

  // ---- models ----

  /** The models found in the store at start: no change to publish. */
  loadModels(models: Iterable<Model>): void {
    for (const model of models) this.#models.set(model.id, Object.freeze(model));
  }

  model(id: string): Model | undefined {
    return this.#models.get(id);
  }

  models(): IterableIterator<Model> {
    return this.#models.values();
  }

  putModel(model: Model): Model {
    const frozen = Object.freeze(model);
    this.#models.set(model.id, frozen);
    this.#publisher?.publish({ kind: "model_upserted", model: frozen });
    return frozen;
  }

  deleteModel(id: string): void {
    if (this.#models.delete(id)) this.#publisher?.publish({ kind: "model_deleted", modelId: id });
  }

  // ---- what a cluster's feed brings ----

  /** Another server's view of an action: tracked like any (queue, waiting), ended when it says so. */
  holdRemote(remote: Action): void {
    const view = Object.freeze(remote);
    const id = view.id;
    const live = this.#actions.get(id);
    // Ended here (this server ran it): that view is final, and holds the result.
    if (live && !live.remote && isEnded(live.view)) return;
    const previous = live?.view.status;
    this.#actions.set(id, {
      view,
      args: live?.args ?? NO_ARGS,
      result: undefined,
      jsonForm: live?.jsonForm ?? "json",
      bytes: live?.bytes ?? 0,
      remote: true,
    });
    this.#track(id, view.status, view.createdBy, previous === undefined);
    if (isEnded(view)) this.#end(id);
  }

  /**
   * Takes an action this server claimed: its arguments as parsed from the kept request,
   * and `view`, as the claim read it; from now on its changes are made here. The view the
   * feed held is dropped: the feed may be behind the claim (an earlier attempt's view, on
   * the server that was lost).
   */
  adopt(view: Action, args: CallArgs, jsonForm: JsonForm): void {
    const live = this.#actions.get(view.id);
    const bytes = payloadBytes(args);
    this.#inflightBytes += bytes - (live?.bytes ?? 0);
    const current = Object.freeze(view);
    this.#actions.set(view.id, { view: current, args, result: undefined, jsonForm, bytes });
    this.#track(view.id, current.status, current.createdBy, live === undefined);
  }

  // ---- actions ----

  /** Throws RESOURCE_EXHAUSTED when an action holding `bytes`, started by `caller`, would not fit. */
  admit(bytes: number, caller: string): void {
    const callers = this.#waitingBy.get(caller) ?? 0;
    if (callers >= this.#o.maxQueuePerCaller) {
      throw new PlinthError(
        "queue_full",
        `${caller ? `caller ${caller}` : "this caller"} has ${callers} actions waiting and server.limits.queued_per_caller is ${this.#o.maxQueuePerCaller}; retry later`,
      );
    }
    if (this.#waiting.size >= this.#o.maxQueue) {
      throw new PlinthError(
        "queue_full",
        `the queue is full: ${this.#waiting.size} actions are waiting (queued or accessing data) and engine.max_queue is ${this.#o.maxQueue}; retry later`,
      );
    }
    if (this.#inflightBytes + bytes > this.#o.maxInflightBytes) {
      const mib = (n: number) => (n / 2 ** 20).toFixed(1);
      throw new PlinthError(
        "queue_full",
        `the actions not yet ended hold ${mib(this.#inflightBytes)} MiB of arguments; this one adds ${mib(bytes)} MiB and engine.max_inflight_mb is ${mib(this.#o.maxInflightBytes)}; retry later`,
      );
    }
  }

  action(id: string): LiveAction | undefined {
    return this.#actions.get(id);
  }

  actions(): IterableIterator<LiveAction> {
    return this.#actions.values();
  }

  /** The queued actions, oldest first. */
  queued(): IterableIterator<string> {
    return this.#queued.values();
  }

  /**
   * 1 for the queued action that goes first: by priority, then age (callers' turns within
   * a priority, and a model's own line, are the process manager's and the model's; this is
   * an estimate); 0 when the action is not queued.
   */
  queuePosition(id: string): number {
    if (!this.#queued.has(id)) return 0;
    const mine = this.#priority(id);
    let position = 1;
    let before = true;
    for (const other of this.#queued) {
      if (other === id) before = false;
      else if (before ? this.#priority(other) <= mine : this.#priority(other) < mine) position++;
    }
    return position;
  }

  #priority(id: string): number {
    return this.#actions.get(id)?.view.priority || DEFAULT_PRIORITY;
  }

  /** A new action (status QUEUED); call admit() first. */
  addAction(view: Action, args: CallArgs, jsonForm: JsonForm): Action {
    const bytes = payloadBytes(args);
    this.#inflightBytes += bytes;
    this.#actions.set(view.id, { view, args, result: undefined, jsonForm, bytes });
    return this.#setView(view.id, view, {}, true);
  }

  /** Applies a change to a live action and publishes the new view. */
  update(id: string, patch: ActionPatch): Action {
    const live = this.#actions.get(id);
    if (!live) throw new Error(`action ${id} is not live`);
    return this.#setView(id, live.view, patch, false);
  }

  /** Changes one data-access entry, found by its argument path. */
  updateDataAccess(id: string, argument: string, patch: Partial<DataAccessProgress>): Action {
    const live = this.#actions.get(id);
    if (!live) throw new Error(`action ${id} is not live`);
    const dataAccess = live.view.dataAccess.map((entry) => (entry.argument === argument ? Object.freeze({ ...entry, ...patch }) : entry));
    return this.#setView(id, live.view, { dataAccess }, false);
  }

  /**
   * The last change of an action: it has ended, with `result` as its result's payload.
   * Returns it as it ended: retention may drop it from the live state at once.
   */
  finish(id: string, patch: ActionPatch, result?: Payload): LiveAction {
    const live = this.#actions.get(id);
    if (!live) throw new Error(`action ${id} is not live`);
    const view = this.#setView(id, live.view, patch, false);
    const ended: LiveAction = { ...live, view, result, bytes: live.bytes + (result?.bytes ?? 0) + ownBytes(view) };
    this.#actions.set(id, ended);
    this.#inflightBytes -= live.bytes;
    this.#ended.set(id, performance.now());
    this.#endedBytes += ended.bytes;
    this.retire();
    return ended;
  }

  /** Adds a state the action's own call reported to its series. */
  recordState(id: string, state: Value): void {
    let series = this.#states.get(id);
    if (!series) {
      series = new StateSeries();
      this.#states.set(id, series);
    }
    series.add(state);
  }

  /** The action's reported states so far, oldest first (none for another server's action). */
  states(id: string): readonly StatePoint[] {
    return this.#states.get(id)?.points ?? [];
  }

  /**
   * Drops ended actions beyond the retention's count, age and bytes, oldest first
   * (their history stays in the store): amortized O(1) per action.
   */
  retire(now = performance.now()): void {
    const { retainActions, retainActionsMs, retainBytes } = this.#o;
    const cutoff = now - retainActionsMs;
    for (const [id, endedAt] of this.#ended) {
      if (this.#ended.size <= retainActions && endedAt >= cutoff && this.#endedBytes <= retainBytes) break;
      this.#ended.delete(id);
      this.#endedBytes -= this.#actions.get(id)?.bytes ?? 0;
      this.#actions.delete(id);
      this.#states.delete(id);
    }
  }

  #setView(id: string, previous: Action, patch: ActionPatch, added: boolean): Action {
    const status = patch.status ?? previous.status;
    if (added || status !== previous.status) this.#track(id, status, previous.createdBy, added);
    const updateTime: Timestamp = patch.updateTime ?? timestampNow();
    const view = Object.freeze({ ...previous, ...patch, updateTime, queuePosition: this.queuePosition(id) }) as Action;
    const live = this.#actions.get(id)!;
    this.#actions.set(id, { ...live, view });
    this.#publisher?.publish({ kind: "action_upserted", action: view });
    return view;
  }

  /** Counts the action where its status puts it: waiting (max_queue, per caller) and queued (queue_position). */
  #track(id: string, status: ActionStatus, createdBy: string, added: boolean): void {
    const wasWaiting = this.#waiting.has(id);
    if (WAITING.has(status)) this.#waiting.add(id);
    else this.#waiting.delete(id);
    const waiting = this.#waiting.has(id);
    if (waiting !== wasWaiting) {
      const n = (this.#waitingBy.get(createdBy) ?? 0) + (waiting ? 1 : -1);
      if (n > 0) this.#waitingBy.set(createdBy, n);
      else this.#waitingBy.delete(createdBy);
    }
    // Re-queued (after its data access) goes to the back, as it waits again.
    if (added || status !== ActionStatus.QUEUED) this.#queued.delete(id);
    if (status === ActionStatus.QUEUED && !this.#queued.has(id)) this.#queued.add(id);
  }

  /** An action has ended: its bytes count as ended ones, and retention may drop it. */
  #end(id: string): void {
    if (this.#ended.has(id)) return;
    const live = this.#actions.get(id)!;
    this.#inflightBytes -= live.bytes;
    this.#ended.set(id, performance.now());
    this.#endedBytes += live.bytes;
    this.retire();
  }
}
