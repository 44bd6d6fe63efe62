/**
 * One server's runner: every action runs here, in the order its model's lock gives
 * (calls on one model one at a time, in arrival order; calls on different models at
 * once, up to the process manager's children).
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";
import { goneServerEnd } from "../store/interrupted.ts";
import { modelMessage } from "../store/model-message.ts";
import type { ModelMeta, Store } from "../store/store.ts";
import { type LifecycleDeps, persist, type RunRequest, runAction, storedPayloads } from "./action-lifecycle.ts";
import type { ArgLimits, ParsedArgs } from "./args.ts";
import { CancelReason } from "./cancel-reason.ts";
import type { LiveAction, LiveTable } from "./live-table.ts";
import type { JsonForm } from "./payloads.ts";
import { parseRequest, requestBytes, timeoutMillis } from "./requests.ts";
import { afterLoss } from "./retry-policy.ts";
import { abortable, type Runner, refused, type ServerInfo, type Submitted } from "./runner.ts";
import { Runs } from "./runs.ts";

/**
 * How long a call whose caller waits for its end may wait to be stored (with its next
 * change, which its start shortens to START_LINGER_MS): beyond what a call queues for
 * under load, so that a short one is stored once, ended; bounded, so that the history
 * holds even a long one soon.
 */
const WAITED_LINGER_MS = 1000;

export class LocalRunner implements Runner {
  readonly #deps: LifecycleDeps;
  readonly #table: LiveTable;
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #runs: Runs;
  /** Aborted once the server stops. */
  readonly #closing = new AbortController();
  /** Aborted once the server drains. */
  readonly #draining = new AbortController();

  /** What a kept request's arguments are parsed against when it runs again. */
  readonly #limits: Omit<ArgLimits, "keepValueBytes">;

  constructor(deps: LifecycleDeps, limits: Omit<ArgLimits, "keepValueBytes">) {
    this.#deps = deps;
    this.#limits = limits;
    this.#table = deps.table;
    this.#store = deps.store;
    this.#logger = deps.logger;
    this.#runs = new Runs(deps.table);
  }

  /**
   * Loads the models' metadata (instance bytes stay in the store until asked for) and
   * marks every action the previous server left unfinished as failed: interrupted (or
   * succeeded, when an older Plinth stored its revision and died before its end).
   */
  async open(): Promise<void> {
    this.#table.loadModels((await this.#store.allModels()).map((meta) => modelMessage(meta)));
    const why = "interrupted by server restart";
    const resumed: (() => void)[] = [];
    for (const action of await this.#store.unfinishedActions()) {
      const made = await this.#store.revisionMadeBy(action);
      // An action with a retry policy runs its next attempt from its kept request (and checkpoint).
      const pending = action.retry && !made ? await this.#store.pendingRequest(action.id) : {};
      const next = pending.request ? afterLoss(action, why) : undefined;
      const start = next && pending.request && this.#resume(next, pending.request, pending.checkpoint);
      if (start) {
        resumed.push(start);
        const when = next.nextAttemptTime ? ` at ${new Date(timestampMs(next.nextAttemptTime)).toISOString()}` : "";
        this.#logger.warn(
          { actionId: action.id, attempt: next.attempt },
          `an action the previous server left unfinished runs its attempt ${next.attempt}${when}`,
        );
        continue;
      }
      const ended = goneServerEnd(action, why, made);
      await this.#store.putAction(ended);
      const as = ended.status === ActionStatus.SUCCEEDED ? "succeeded: its new revision had been stored" : `failed: ${why}`;
      this.#logger.warn({ actionId: action.id }, `an action the previous server left unfinished is marked ${as}`);
    }
    for (const start of resumed) start();
  }

  /**
   * An action the previous server left, made live again to run its next attempt from its
   * kept request; undefined when the request no longer parses here (a plugin gone).
   */
  #resume(action: Action, request: Uint8Array, checkpoint: Uint8Array | undefined): (() => void) | undefined {
    let parsed: ParsedArgs;
    let jsonForm: JsonForm;
    try {
      ({ parsed, jsonForm } = parseRequest(request, this.#deps.views, this.#limits, (name) => this.#deps.plugins.dataAccess(name) !== undefined));
    } catch (error) {
      this.#logger.warn({ err: error, actionId: action.id }, "the request of an action the previous server left no longer parses");
      return undefined;
    }
    this.#runs.enter(action.id);
    this.#table.adopt(action, parsed, jsonForm);
    void this.#store.putAction(action).catch(() => {});
    return this.#start(action.id, parsed, action.timeout ? timeoutMillis(action.timeout) : undefined, checkpoint);
  }

  async submit({ id, parsed, jsonForm, timeoutMs, awaited }: Submitted): Promise<() => void> {
    this.#runs.enter(id);
    const view = this.#table.action(id)!.view;
    try {
      // The action exists once the store has it: a store that fails refuses the call. One
      // that may run again keeps its whole request, for its next attempt after a restart.
      const payloads = storedPayloads(this.#deps, parsed, undefined);
      const request = view.retry ? { request: requestBytes(parsed, jsonForm, this.#deps.views.maxJsonValueBytes) } : {};
      // A call whose caller waits for its end lingers instead: a short one is stored once,
      // ended; a store that fails then fails it (store_failed) with its end.
      if (awaited) void persist(this.#store, view, payloads, WAITED_LINGER_MS).catch(() => {});
      else await persist(this.#store, view, { ...payloads, ...request });
    } catch (error) {
      const refusal = refused(this.#table, id, error);
      this.#runs.leave(id);
      throw refusal;
    }
    return this.#start(id, parsed, timeoutMs);
  }

  /** What starts an entered action's run. */
  #start(id: string, parsed: RunRequest["args"], timeoutMs: number | undefined, checkpoint?: Uint8Array): () => void {
    const table = this.#table;
    return () =>
      void this.#runs
        .run(id, timeoutMs, (signal, waiting) =>
          runAction(this.#deps, {
            id,
            args: parsed,
            signal,
            onWaiting: waiting,
            draining: this.#draining.signal,
            // One server writes every revision: its table knows the latest.
            knownRevision: (modelId) => table.model(modelId)?.revision,
            closing: this.#closing.signal,
            ...(checkpoint ? { checkpoint } : {}),
          }),
        )
        .catch((error: unknown) => this.#logger.error({ err: error, actionId: id }, "running an action failed"));
  }

  async unfinished(id: string): Promise<boolean> {
    return this.#runs.has(id);
  }

  async wait(id: string, signal?: AbortSignal): Promise<LiveAction | undefined> {
    const running = this.#runs.get(id);
    return running ? abortable(running.done, signal) : undefined;
  }

  async cancel(id: string, reason: CancelReason): Promise<Action | undefined> {
    const running = this.#runs.get(id);
    if (!running) return undefined;
    this.#runs.cancel(id, reason);
    return (await running.done).view;
  }

  busy(modelId: string): number {
    return this.#deps.locks.users(modelId);
  }

  async updateModel(modelId: string, instance: Uint8Array, signal?: AbortSignal): Promise<ModelMeta> {
    // Serialized with the model's calls, like any other change of it: the batches filling on it go now.
    this.#deps.batches.hurry(modelId);
    using _lock = await this.#deps.locks.acquire(modelId, signal);
    const record = await this.#store.getModel(modelId);
    if (!record) throw notFoundModel(modelId);
    const next = { ...record, revision: record.revision + 1n, updateTime: new Date(), instance, instanceSize: instance.byteLength, actionId: "" };
    return this.#store.putModel(next);
  }

  async catchUp(): Promise<void> {}

  async declared(): Promise<{ modelTypes: string[]; dataAccess: string[] }> {
    return { modelTypes: [], dataAccess: [] };
  }

  async servers(): Promise<ServerInfo[]> {
    return [];
  }

  drain(): Promise<void> {
    this.#draining.abort();
    return this.#runs.idle();
  }

  async close(): Promise<void> {
    this.#closing.abort();
    await this.#runs.cancelAll(new CancelReason("shutdown", "the server is shutting down"));
  }
}

function notFoundModel(modelId: string) {
  return new PlinthError("not_found", `model ${modelId} not found`);
}
