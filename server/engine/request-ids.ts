/**
 * Idempotent requests: a CreateInstance, Fit or Predict with a request_id starts one
 * action per caller and id; an AddInstance, UpdateInstance or DeleteModel with one does
 * its change once. The store arbitrates (its claims hold across a restart and the
 * servers of a cluster); on one server the requests with one id also take turns, so a
 * repeat finds the first one's action stored, or its outcome recorded.
 */
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import type { Action, ActionCall } from "../../gen/plinth/v1/action_pb.ts";
import { PredictRequestSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { invalid, PlinthError, quote } from "../errors.ts";
import type { RequestClaim, Store } from "../store/store.ts";
import type { ActionRequest } from "./engine.ts";
import { newId } from "./ids.ts";

/** A request with an id, before it claims it. */
export type IdempotentRequest = Omit<RequestClaim, "actionId" | "outcome">;

/** How often a request whose id another server claimed, and has not stored yet, looks again. */
const RECLAIM_MS = 100;

/** 1 to 128 printable ASCII characters. */
export function checkRequestId(requestId: string): void {
  if (!/^[\x20-\x7e]{1,128}$/.test(requestId)) {
    throw invalid(`request_id: 1 to 128 printable ASCII characters, got ${requestId.length} character(s): ${quote(requestId)}`);
  }
}

/** A digest of a call that starts no action: its name, and what it changes with what. */
export function changeFingerprint(call: "AddInstance" | "UpdateInstance" | "DeleteModel", target: string, instance?: Uint8Array): string {
  const hash = createHash("sha256").update(`${call}\0${target}\0`);
  if (instance) hash.update(instance);
  return hash.digest("hex");
}

/**
 * A digest of what the call does: its kind, model, arguments (keyword ones sorted by
 * name), timeout and JSON form; not wait, nor the request_id.
 */
export function fingerprint(call: ActionCall, modelId: string, modelType: string, request: ActionRequest): string {
  const kwargs = Object.fromEntries(Object.entries(request.kwargs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const bytes = toBinary(
    PredictRequestSchema,
    create(PredictRequestSchema, {
      modelId,
      args: request.args,
      kwargs,
      ...(request.timeout ? { timeout: request.timeout } : {}),
      ...(request.jsonForm ? { jsonForm: request.jsonForm } : {}),
      ...(request.retry ? { retry: request.retry } : {}),
    }),
  );
  return createHash("sha256").update(`${call}\0${modelType}\0`).update(bytes).digest("hex");
}

export class RequestIds {
  readonly #store: Store;
  /** The action stored (or the store's holder), else undefined: the engine's read. */
  readonly #find: (actionId: string) => Promise<Action | undefined>;
  /** The last request with each caller's id on this server: the next one waits for it. */
  readonly #turns = new Map<string, Promise<unknown>>();

  constructor(store: Store, find: (actionId: string) => Promise<Action | undefined>) {
    this.#store = store;
    this.#find = find;
  }

  /** The action `start` starts (with the id it is given) under the claim, or the one the id's first request started. */
  once(request: IdempotentRequest, start: (actionId: string) => Promise<Action>, signal: AbortSignal): Promise<Action> {
    return this.#inTurn(request, () =>
      this.#claim(
        { ...request, actionId: newId("a") },
        (claim) => start(claim.actionId),
        (held) => this.#find(held.actionId),
        signal,
      ),
    );
  }

  /**
   * A call that starts no action, done once per claim: `run` does it and names its
   * outcome (as `answer` reads it); a repeat gets `answer` of the first one's outcome.
   */
  onceDone<T>(
    request: IdempotentRequest,
    run: () => Promise<{ value: T; outcome: string }>,
    answer: (outcome: string) => Promise<T>,
    signal: AbortSignal,
  ): Promise<T> {
    const start = async (claim: RequestClaim) => {
      const { value, outcome } = await run();
      // Done: a claim left unsettled (the store failing now) is taken over once stale, as a dead server's.
      await this.#store.settleRequest(claim, outcome).catch(() => {});
      return value;
    };
    const found = async (held: RequestClaim) => (held.outcome ? answer(held.outcome) : undefined);
    return this.#inTurn(request, () => this.#claim({ ...request, actionId: newId("r") }, start, found, signal));
  }

  async #inTurn<T>(request: IdempotentRequest, fn: () => Promise<T>): Promise<T> {
    const key = `${request.createdBy}\0${request.requestId}`;
    const turn = (this.#turns.get(key) ?? Promise.resolve()).then(fn);
    const done = turn.catch(() => {});
    this.#turns.set(key, done);
    try {
      return await turn;
    } finally {
      if (this.#turns.get(key) === done) this.#turns.delete(key);
    }
  }

  async #claim<T>(
    claim: RequestClaim,
    start: (claim: RequestClaim) => Promise<T>,
    found: (held: RequestClaim) => Promise<T | undefined>,
    signal: AbortSignal,
  ): Promise<T> {
    for (;;) {
      signal.throwIfAborted();
      const held = await this.#store.claimRequest(claim, new Date());
      if (!held) {
        try {
          return await start(claim);
        } catch (error) {
          await this.#store.releaseRequest(claim).catch(() => {});
          throw error;
        }
      }
      if (held.fingerprint !== claim.fingerprint) {
        const by = held.actionId.startsWith("a-") ? `started action ${held.actionId}` : `was used by ${held.outcome || "a call still under way"}`;
        throw new PlinthError(
          "already_exists",
          `request_id ${quote(claim.requestId)} ${by} with other arguments; send them as they were, or use a new request_id`,
        );
      }
      const answer = await found(held);
      if (answer !== undefined) return answer;
      // Claimed on another server, which has not stored its action yet (or died first: the claim is then taken over).
      await sleep(RECLAIM_MS, undefined, { signal });
    }
  }
}
