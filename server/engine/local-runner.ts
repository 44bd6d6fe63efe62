/**
 * One server's runner: every action runs here, in the order its model's lock gives
 * (calls on one model one at a time, in arrival order; calls on different models at
 * once, up to the process manager's children).
 */
import type { Logger } from "pino";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../errors.ts";
import { goneServerEnd } from "../store/interrupted.ts";
import { modelMessage } from "../store/model-message.ts";
import type { ModelMeta, Store } from "../store/store.ts";
import { type LifecycleDeps, persist, runAction, storedPayloads } from "./action-lifecycle.ts";
import { CancelReason } from "./cancel-reason.ts";
import type { LiveAction, LiveTable } from "./live-table.ts";
import { abortable, type Runner, refused, type ServerInfo, type Submitted } from "./runner.ts";
import { Runs } from "./runs.ts";

export class LocalRunner implements Runner {
  readonly #deps: LifecycleDeps;
  readonly #table: LiveTable;
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #runs: Runs;
  /** Aborted once the server stops. */
  readonly #closing = new AbortController();

  constructor(deps: LifecycleDeps) {
    this.#deps = deps;
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
    for (const action of await this.#store.unfinishedActions()) {
      const ended = goneServerEnd(action, why, await this.#store.revisionMadeBy(action));
      await this.#store.putAction(ended);
      const as = ended.status === ActionStatus.SUCCEEDED ? "succeeded: its new revision had been stored" : `failed: ${why}`;
      this.#logger.warn({ actionId: action.id }, `an action the previous server left unfinished is marked ${as}`);
    }
  }

  async submit({ id, parsed, timeoutMs }: Submitted): Promise<() => void> {
    this.#runs.enter(id);
    try {
      // The action exists once the store has it: a store that fails refuses the call.
      await persist(this.#store, this.#table.action(id)!.view, storedPayloads(this.#deps, parsed, undefined));
    } catch (error) {
      const refusal = refused(this.#table, id, error);
      this.#runs.leave(id);
      throw refusal;
    }
    const table = this.#table;
    return () =>
      void this.#runs
        .run(id, timeoutMs, (signal) =>
          runAction(this.#deps, {
            id,
            args: parsed,
            signal,
            // One server writes every revision: its table knows the latest.
            knownRevision: (modelId) => table.model(modelId)?.revision,
            closing: this.#closing.signal,
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
