/**
 * What runs the actions the engine admits: one server's LocalRunner, or a cluster's
 * ClusterRunner (server/cluster/) where several servers share a database's queue. The
 * engine hands a runner an action the live table holds and asks it about waits, cancels
 * and changes of a model; it never knows which runner it has.
 */
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";
import type { ModelMeta } from "../store/store.ts";
import { ActionFailure } from "./action-failure.ts";
import { failure } from "./action-lifecycle.ts";
import type { ParsedArgs } from "./args.ts";
import type { CancelReason } from "./cancel-reason.ts";
import type { LiveAction, LiveTable } from "./live-table.ts";
import type { JsonForm } from "./payloads.ts";

/** A new action, admitted and held by the live table (QUEUED): for the runner to store and run. */
export interface Submitted {
  id: string;
  parsed: ParsedArgs;
  jsonForm: JsonForm;
  /** Its timeout in ms, counted from its creation. */
  timeoutMs: number | undefined;
  /**
   * Its caller waits for its end, and nothing else needs it stored before then (no
   * request_id, no retry after a restart): a runner may store it with its next change.
   */
  awaited?: boolean;
}

/** A server of the cluster, as its row says. */
export interface ServerInfo {
  name: string;
  host: string;
  pid: number;
  since: Date;
  /** Where it serves gRPC (host:port). */
  address: string;
  modelTypes: string[];
  dataAccess: string[];
  plugins: string[];
  /** The server answering. */
  self: boolean;
}

export interface Runner {
  /** Starts from the store: the models, and what a server that died left unfinished; then the runner's own work. */
  open(): Promise<void>;
  /**
   * Stores the action (in a cluster, in the queue, claimed here when this server can run
   * it); resolves with what starts it (runs it here, or leaves it to the cluster). Rejects
   * when the store refuses it: the action has then ended FAILED.
   */
  submit(action: Submitted): Promise<() => void>;
  /** Whether the action is queued or running, anywhere (a cluster first catches up with what it has not heard of). */
  unfinished(id: string): Promise<boolean>;
  /**
   * Resolves once the action has ended: as it ended here, with its result, or undefined
   * when it ended elsewhere (or was not running). Rejects with the signal's reason first.
   */
  wait(id: string, signal?: AbortSignal): Promise<LiveAction | undefined>;
  /** Stops the action and resolves once it has ended: as it ended here, or undefined (ended elsewhere, or before). */
  cancel(id: string, reason: CancelReason): Promise<Action | undefined>;
  /** Calls on the model queued or running on this server (a model with any may not be deleted). */
  busy(modelId: string): number;
  /** UpdateInstance: stores the instance as the model's next revision, after the calls on it queued before. */
  updateModel(modelId: string, instance: Uint8Array, signal?: AbortSignal): Promise<ModelMeta>;
  /** Hears what other servers changed and this one has not heard of yet (nothing alone). */
  catchUp(): Promise<void>;
  /** The model types and data-access functions some server of the engine declares, beyond this one's. */
  declared(): Promise<{ modelTypes: string[]; dataAccess: string[] }>;
  servers(): Promise<ServerInfo[]>;
  /**
   * Takes no more work from a shared queue (the other servers of a cluster take it) and
   * resolves once nothing is queued or running here.
   */
  drain(): Promise<void>;
  /** Stops every action running here and waits for their ends. */
  close(): Promise<void>;
}

/**
 * An action the store refused to take: it ends FAILED in the live table, and the caller
 * gets the store's error (UNAVAILABLE unless it says otherwise).
 */
export function refused(table: LiveTable, id: string, error: unknown): PlinthError {
  table.finish(id, { status: ActionStatus.FAILED, error: failure(error).error, endTime: timestampNow() });
  const cause = error instanceof ActionFailure ? error.cause : error;
  return PlinthError.is(cause) ? cause : new PlinthError("unavailable", (error as Error).message, { cause });
}

/** `promise`, or the signal's reason if it aborts first; no listener is left behind. */
export function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    void promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
