/**
 * The action protocol behind one call: start it, follow its updates, wait for its end,
 * cancel it. A run answers with plain values; its progress is an async iterable that
 * opens a WatchAction stream only when someone iterates it.
 */
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Action, ActionStatus, ActionView } from "../gen/plinth/v1/action_pb.ts";
import type { JsonValue } from "../sdk/mod.ts";
import type { ActionClient } from "./client.ts";

export type Status = "queued" | "accessing_data" | "executing" | "storing" | "succeeded" | "failed" | "cancelled";

const statusNames: Record<number, Status> = {
  [ActionStatus.QUEUED]: "queued",
  [ActionStatus.ACCESSING_DATA]: "accessing_data",
  [ActionStatus.EXECUTING]: "executing",
  [ActionStatus.STORING]: "storing",
  [ActionStatus.SUCCEEDED]: "succeeded",
  [ActionStatus.FAILED]: "failed",
  [ActionStatus.CANCELLED]: "cancelled",
};

export function statusName(status: ActionStatus): Status {
  return statusNames[status] ?? "queued";
}

export function isEnded(action: Action): boolean {
  return action.status === ActionStatus.SUCCEEDED || action.status === ActionStatus.FAILED || action.status === ActionStatus.CANCELLED;
}

/** One update of a running action. */
export interface Progress {
  status: Status;
  /** The plugin's latest report (ctx.report), e.g. { progress: 0.4 }. */
  state: JsonValue | undefined;
  /** 1 for the next action to run; 0 when not queued. */
  queuePosition: number;
  /** Each data-access argument: where it sits, its function, its status and latest report. */
  dataAccess: { argument: string; name: string; status: Status; state: JsonValue | undefined }[];
  /** The action as the server sent it. */
  action: Action;
}

export function progressOf(action: Action): Progress {
  return {
    status: statusName(action.status),
    state: action.state ? (toJson(ValueSchema, action.state) as JsonValue) : undefined,
    queuePosition: action.queuePosition,
    dataAccess: action.dataAccess.map((d) => ({
      argument: d.argument,
      name: d.name,
      status: statusName(d.status),
      state: d.state ? (toJson(ValueSchema, d.state) as JsonValue) : undefined,
    })),
    action,
  };
}

/** An action that failed or was cancelled: its error code, message and the plugin's stack. */
export class PlinthActionError extends Error {
  /** The action's error code (plugin_error, cancelled, deadline_exceeded, …: see the README). */
  readonly code: string;
  readonly status: Status;
  /** The plugin's stack, when the plugin threw. */
  readonly pluginStack: string;
  readonly action: Action;
  constructor(action: Action) {
    const status = statusName(action.status);
    super(`action ${action.id} ${status}: ${action.error?.code ?? "unknown"}: ${action.error?.message ?? ""}`);
    this.name = "PlinthActionError";
    this.code = action.error?.code ?? "";
    this.status = status;
    this.pluginStack = action.error?.stack ?? "";
    this.action = action;
  }
}

export interface ActionRun<T> {
  /**
   * The action as the server first answered (queued, with its id). Read it, or `progress`,
   * right after the call to follow the action; a run of which only `done` is read makes one
   * round trip (the request waits for the end), and `started` then gives the ended action.
   */
  readonly started: Promise<Action>;
  /** Every update until the action ends (the last one included). */
  readonly progress: AsyncIterable<Progress>;
  /** Its result once it succeeded; rejects with a PlinthActionError when it failed or was cancelled. */
  readonly done: Promise<T>;
  /** Cancels it; resolves with the action as it ended. */
  cancel(): Promise<Action>;
}

/**
 * Starts an action with `send` and follows it. `signal` cancels it (CancelAction) when
 * aborted; `result` turns the ended action into the run's value. The request goes on the
 * next microtask: a run of which only `done` was read by then (no `started`, `progress`,
 * `cancel` or signal) asks the server to answer once the action has ended, in one round
 * trip; any other starts the action, then waits for its end or follows it.
 */
export function followAction<T>(
  client: ActionClient,
  send: (wait: boolean) => Promise<Action>,
  result: (action: Action) => T,
  signal?: AbortSignal,
): ActionRun<T> {
  let followed = signal !== undefined;
  const start = new Promise<Action>((resolve, reject) => queueMicrotask(() => send(!followed).then(resolve, reject)));
  start.catch(() => {}); // done, started and progress each carry its failure to whoever awaits them
  const cancel = async () => (await client.cancelAction({ actionId: (await start).id })).action!;
  const onAbort = () => void cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  const done = start
    .then(async (started) => {
      if (signal?.aborted) onAbort();
      const ended = isEnded(started) ? started : (await client.waitAction({ actionId: started.id, view: ActionView.RESULT })).action!;
      if (ended.status !== ActionStatus.SUCCEEDED) throw new PlinthActionError(ended);
      return result(ended);
    })
    .finally(() => signal?.removeEventListener("abort", onAbort));
  done.catch(() => {}); // Whoever awaits `done` sees the failure; an unawaited run is no unhandled rejection.
  const progress: AsyncIterable<Progress> = {
    async *[Symbol.asyncIterator]() {
      const { id } = await start;
      for await (const update of client.watchAction({ actionId: id })) yield progressOf(update.action!);
    },
  };
  return {
    get started() {
      followed = true;
      return start;
    },
    get progress() {
      followed = true;
      return progress;
    },
    done,
    cancel() {
      followed = true;
      return cancel();
    },
  };
}
