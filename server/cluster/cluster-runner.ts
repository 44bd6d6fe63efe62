/**
 * A cluster's runner: several servers on one PostgreSQL database share its queue. A new
 * action is stored in the queue, and this server claims it at once when it has a child to
 * spare and the model lets it in; otherwise whichever server has one claims it, in the
 * queue's order per model (the database keeps the rule: one call at a time on a model,
 * or several shared predicts; plinth_claim), those on models its children hold first. This server follows the database's feed (every server tells
 * the same state), claims work while it has children to spare, cancels what it runs when
 * any server asks, ends a queued call whose timeout passed, gives back a claim whose
 * answer a broken connection lost, and stores an end the database could not take once it
 * can.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { type Action, ActionCall, ActionErrorSchema, ActionSchema, ActionStatus, CancelOutcomeSchema } from "../../gen/plinth/v1/action_pb.ts";
import { cancelledDataAccess, type LifecycleDeps, persist, type RunOutcome, runAction, storedPayloads } from "../engine/action-lifecycle.ts";
import type { ArgLimits, ParsedArgs } from "../engine/args.ts";
import { CancelReason } from "../engine/cancel-reason.ts";
import { isEnded, type LiveAction, type LiveTable } from "../engine/live-table.ts";
import type { JsonForm } from "../engine/payloads.ts";
import { parseRequest, requestBytes, timeoutMillis } from "../engine/requests.ts";
import { abortable, type Runner, refused, type Submitted } from "../engine/runner.ts";
import { Runs } from "../engine/runs.ts";
import type { StatePublisher } from "../engine/state-publisher.ts";
import { notFound, PlinthError } from "../errors.ts";
import { randomHex } from "../run-id.ts";
import { interruptedAction } from "../store/interrupted.ts";
import { modelMessage } from "../store/model-message.ts";
import type { ModelMeta, Store } from "../store/store.ts";
import { Feed } from "./feed.ts";
import type { ClaimedAction, ClaimScope, Cluster, ClusterEvents, ServerInfo } from "./types.ts";

/** How often a server looks for claims it holds but does not run. */
const LOST_CLAIM_CHECK_MS = 5000;

export interface ClusterRunnerOptions {
  cluster: Cluster;
  publisher: StatePublisher;
  /** Actions this server runs at once (engine.max_children): how much work it claims. */
  maxRunning: number;
  /** How long a queued call may wait behind calls on models this server's children hold (backend.claim_affinity_ms). */
  claimAffinityMs: number;
  limits: Omit<ArgLimits, "keepValueBytes">;
}

export class ClusterRunner implements Runner {
  readonly #deps: LifecycleDeps;
  readonly #o: ClusterRunnerOptions;
  readonly #cluster: Cluster;
  readonly #table: LiveTable;
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #runs: Runs;
  readonly #feed: Feed;
  readonly #closing = new AbortController();
  #claiming = false;
  #claimAgain = false;
  /**
   * Aborted once the server drains: it claims nothing more (the others take the queue), and
   * a run's wait for its next attempt holds on until the stop.
   */
  readonly #draining = new AbortController();
  /** Actions being submitted: claimed here, they run here once the database has them. */
  readonly #entering = new Set<Promise<void>>();
  /** New calls this server is claiming as they are stored: counted against its free children. */
  #reserved = 0;
  /** Ended here, their end not yet taken by the database. */
  readonly #recording = new Set<string>();
  /** Held in the queue by this server but not run here at the last look: lost claims, if still so at the next. */
  #unaccounted = new Set<string>();
  /** The timeouts of queued calls this server took, until a server claims them or they end. */
  readonly #queueTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Waiters for queued actions: told when this server starts one. */
  readonly #launchWaiters = new Map<string, Set<() => void>>();
  #lostClaims: ReturnType<typeof setInterval> | undefined;
  #unsubscribe: (() => void) | undefined;
  readonly #listeners: { [K in keyof ClusterEvents]: (...args: ClusterEvents[K]) => void } = {
    changes: (batch) => void this.#feed.notice(batch),
    work: () => this.#claimSoon(true),
    cancel: (id, by) => this.#runs.cancel(id, new CancelReason("CancelAction", "cancelled by CancelAction", by)),
  };

  constructor(deps: LifecycleDeps, options: ClusterRunnerOptions) {
    this.#deps = deps;
    this.#o = options;
    this.#cluster = options.cluster;
    this.#table = deps.table;
    this.#store = deps.store;
    this.#logger = deps.logger;
    this.#runs = new Runs(deps.table);
    this.#feed = new Feed(options.cluster, deps.table, options.publisher, this.#runs, deps.logger);
  }

  /** Starts from the cluster's state, follows its feed, and takes its share of the queued work. */
  async open(): Promise<void> {
    const snapshot = await this.#cluster.snapshot();
    this.#o.publisher.reset(snapshot.revision);
    this.#table.loadModels(snapshot.models.map((meta) => modelMessage(meta)));
    for (const action of snapshot.actions) this.#table.holdRemote(action);
    // A queued call's timeout is the claiming server's to count once one claims it.
    this.#unsubscribe = this.#o.publisher.subscribe((event) => {
      if (event.kind !== "action_upserted") return;
      // A change queued on a model, on any server, waits for the predicts claimed before it:
      // the batches filling on it here go now.
      const queued = event.action;
      if (queued.status === ActionStatus.QUEUED && queued.call !== ActionCall.PREDICT && queued.modelId) this.#deps.batches.hurry(queued.modelId);
      if (this.#queueTimers.size === 0) return;
      const { id, server } = event.action;
      if (!server && !isEnded(event.action)) return;
      clearTimeout(this.#queueTimers.get(id));
      this.#queueTimers.delete(id);
    });
    for (const [event, listener] of Object.entries(this.#listeners)) this.#cluster.events.on(event as keyof ClusterEvents, listener as () => void);
    await this.#feed.pull();
    this.#claimSoon(true);
    this.#lostClaims = setInterval(() => void this.#releaseLost(), LOST_CLAIM_CHECK_MS);
    this.#lostClaims.unref();
  }

  async submit(submitted: Submitted): Promise<() => void> {
    // A drain that begins while the database takes the claim waits for it to run here.
    const entering = this.#submit(submitted);
    const settled = entering.then(
      () => {},
      () => {},
    );
    this.#entering.add(settled);
    void settled.then(() => this.#entering.delete(settled));
    return entering;
  }

  async #submit({ id, parsed, jsonForm, timeoutMs }: Submitted): Promise<() => void> {
    const { views } = this.#deps;
    const view = this.#table.action(id)!.view;
    // The action waits in the database's queue for a server to claim it: this one at once
    // when it has a child to spare and the model is free.
    const claim = this.#canRunHere(
      parsed.dataAccess.map((n) => n.name),
      view.modelType,
    );
    if (claim) this.#reserved++;
    let revision: bigint | undefined;
    try {
      const payloads = { ...storedPayloads(this.#deps, parsed, undefined), request: requestBytes(parsed, jsonForm, views.maxJsonValueBytes) };
      revision = await this.#cluster.enqueue(view, payloads, claim);
    } catch (error) {
      throw refused(this.#table, id, error);
    } finally {
      if (claim) this.#reserved--;
    }
    if (revision === undefined) {
      // Queued for any server: its view is the feed's from now on.
      this.#table.holdRemote(this.#table.action(id)!.view);
      return () => {
        if (timeoutMs !== undefined) this.#expireQueued(id, timeoutMs);
        this.#claimSoon(true);
      };
    }
    this.#runs.enter(id);
    // Its view as it is now: it may have changed while the claim was stored.
    const now = this.#table.action(id)?.view;
    this.#table.adopt(create(ActionSchema, { ...(now && !isEnded(now) ? now : view), server: this.#cluster.server }), parsed, jsonForm);
    return () => this.#launch(id, parsed, timeoutMs, revision);
  }

  async unfinished(id: string): Promise<boolean> {
    if (this.#runs.has(id)) return true;
    if (!this.#table.action(id)) await this.#feed.pull();
    return this.#unfinished(id);
  }

  async wait(id: string, signal?: AbortSignal): Promise<LiveAction | undefined> {
    const running = this.#runs.get(id);
    if (running) return abortable(running.done, signal);
    // Queued, or running on another server: it ends here or in the feed.
    if (!(await this.unfinished(id))) return undefined;
    await this.#ended(id, signal);
    return undefined;
  }

  async cancel(id: string, reason: CancelReason): Promise<Action | undefined> {
    const running = this.#runs.get(id);
    if (running) {
      this.#runs.cancel(id, reason);
      return (await running.done).view;
    }
    // Queued: ended here. Claimed: the server running it stops it — asked again each
    // second, in case the request came before that server knew it had claimed it, or
    // that server went and the call is queued again.
    while (this.#unfinished(id) && !this.#runs.has(id)) {
      const queued = await this.#cluster.takeQueued(id);
      if (queued) return this.#endQueued(queued, reason);
      await this.#cluster.requestCancel(id, reason.caller);
      await this.#ended(id, AbortSignal.timeout(1000)).catch(() => {});
    }
    const local = this.#runs.get(id);
    if (!local) return undefined;
    this.#runs.cancel(id, reason);
    return (await local.done).view;
  }

  busy(modelId: string): number {
    return this.#deps.locks.users(modelId);
  }

  /**
   * UpdateInstance in a cluster: in the model's queue as a call, after the calls queued
   * before it, wherever they run, and before those queued after it; never while one runs
   * — waiting for them through the feed.
   */
  async updateModel(modelId: string, instance: Uint8Array, signal?: AbortSignal): Promise<ModelMeta> {
    const update = `u-${randomHex(8)}`;
    let stored = false;
    try {
      await this.#cluster.queueUpdate(update, modelId);
      for (;;) {
        signal?.throwIfAborted();
        const record = await this.#store.getModel(modelId);
        if (!record) throw notFound(`model ${modelId} not found`);
        const next = { ...record, revision: record.revision + 1n, updateTime: new Date(), instance, instanceSize: instance.byteLength, actionId: "" };
        let meta: ModelMeta | undefined;
        try {
          meta = await this.#cluster.putModelQuiet(next, update);
        } catch (error) {
          // Another change of the model came first: read it again.
          if (PlinthError.is(error) && error.kind === "failed_precondition") continue;
          throw error;
        }
        if (meta) {
          stored = true;
          return meta;
        }
        await this.#modelCallEnded(modelId, signal);
      }
    } finally {
      // Also when the answer of queueUpdate or putModelQuiet was lost: it may be in the queue.
      if (!stored) void this.#dropUpdate(update);
    }
  }

  catchUp(): Promise<void> {
    return this.#feed.pull();
  }

  async declared(): Promise<{ modelTypes: string[]; dataAccess: string[] }> {
    const servers = await this.#cluster.servers();
    return { modelTypes: servers.flatMap((s) => s.modelTypes), dataAccess: servers.flatMap((s) => s.dataAccess) };
  }

  servers(): Promise<ServerInfo[]> {
    return this.#cluster.servers();
  }

  async drain(): Promise<void> {
    this.#draining.abort();
    await Promise.all(this.#entering);
    return this.#runs.idle();
  }

  /** Stops what runs here; the actions still queued stay queued: the other servers run them. */
  async close(): Promise<void> {
    this.#closing.abort();
    clearInterval(this.#lostClaims);
    for (const timer of this.#queueTimers.values()) clearTimeout(timer);
    await this.#runs.cancelAll(new CancelReason("shutdown", "the server is shutting down"));
    for (const [event, listener] of Object.entries(this.#listeners)) this.#cluster.events.off(event as keyof ClusterEvents, listener as () => void);
    this.#unsubscribe?.();
    await this.#feed.pull();
  }

  // ---- running ----

  /** Runs an action entered here, under its timeout (what is left of it), with the model's revision the claim found. */
  #launch(
    id: string,
    args: Parameters<typeof runAction>[1]["args"],
    timeoutMs: number | undefined,
    modelRevision: bigint,
    checkpoint?: Uint8Array,
  ): void {
    const run = this.#runs.run(id, timeoutMs, (signal, waiting) =>
      runAction(this.#deps, {
        id,
        args,
        signal,
        onWaiting: (what) => {
          waiting(what);
          // Waiting for its next attempt, it frees its child for queued work.
          if (what === "retry") this.#claimSoon();
        },
        draining: this.#draining.signal,
        ...(checkpoint ? { checkpoint } : {}),
        knownRevision: () => (modelRevision === 0n ? undefined : modelRevision),
        // The other servers' watchers see progress through the database (at the throttled rate).
        onProgress: (view) => void this.#store.putAction(view).catch(() => {}),
        closing: this.#closing.signal,
      }),
    );
    run
      .then(
        (outcome: RunOutcome) => {
          // The others see the action as the database has it: it must end there too.
          if (outcome.unrecorded) void this.#recordEnd(outcome.unrecorded);
        },
        (error: unknown) => this.#logger.error({ err: error, actionId: id }, "running an action failed"),
      )
      // A child is free, and the model: more work may be claimable.
      .finally(() => this.#claimSoon());
    for (const waiter of this.#launchWaiters.get(id) ?? []) waiter();
  }

  /** Whether this server can run the call now: a child to spare, its model type and data access here. */
  #canRunHere(dataAccess: string[], modelType: string): boolean {
    const { plugins } = this.#deps;
    return this.#free() > 0 && plugins.modelType(modelType) !== undefined && dataAccess.every((name) => plugins.dataAccess(name) !== undefined);
  }

  #queuedElsewhere(): boolean {
    for (const id of this.#table.queued()) if (!this.#runs.has(id)) return true;
    return false;
  }

  /**
   * Claims queued work while this server has children to spare; one claim at a time.
   * Unless `anyway` (the cluster said work may be there), only when the live state shows
   * queued actions this server does not run.
   */
  #claimSoon(anyway = false): void {
    if (!anyway && !this.#queuedElsewhere()) return;
    if (this.#claiming) {
      this.#claimAgain = true;
      return;
    }
    this.#claiming = true;
    void this.#claim().finally(() => (this.#claiming = false));
  }

  /**
   * The children this server has to spare: maxRunning less what it runs and is claiming,
   * a batched predict counting for a share of one child (1/maxSize), as its batch does.
   */
  #free(): number {
    let load = this.#reserved;
    // An action waiting for its next attempt holds no child meanwhile.
    for (const [id] of this.#runs.entries()) if (!this.#runs.waitsForRetry(id)) load += this.#share(id);
    return this.#o.maxRunning - load;
  }

  /** How much of a child one run takes: a whole one, or its share of a batch. */
  #share(id: string): number {
    const view = this.#table.action(id)?.view;
    const batching = view?.call === ActionCall.PREDICT ? this.#deps.plugins.batching(view.modelType) : undefined;
    return batching ? 1 / batching.maxSize : 1;
  }

  /**
   * Claims what a free child can take: calls of unbatched types one per child, then
   * predicts of each batched type as many as its batches hold (maxSize per child), so
   * that a batch can fill on one server.
   */
  async #claim(): Promise<void> {
    do {
      this.#claimAgain = false;
      let full = false;
      for (const { modelTypes, perChild } of this.#claimGroups()) {
        const free = Math.floor(this.#free() * perChild + 1e-9);
        if (this.#closing.signal.aborted || this.#draining.signal.aborted) return;
        if (free <= 0 || modelTypes.length === 0) continue;
        let claimed: ClaimedAction[];
        try {
          claimed = await this.#cluster.claim(free, this.#scope(modelTypes));
        } catch (error) {
          // The cluster's next tick (every second) tries again.
          this.#logger.warn({ err: error }, "claiming queued actions failed");
          return;
        }
        // A drain or a stop that began while the database answered: what it gave goes back to
        // the queue (none has started), for the other servers, not to a server that stops.
        if (this.#closing.signal.aborted || this.#draining.signal.aborted) {
          if (claimed.length > 0) await this.#release(claimed.map((work) => work.action.id));
          return;
        }
        for (const work of claimed) await this.#runClaimed(work);
        if (claimed.length === free) full = true;
      }
      if (full) this.#claimAgain = true;
    } while (this.#claimAgain);
  }

  /** Gives claimed actions that did not start back to the queue; should that fail, the other servers do once this one has left. */
  async #release(ids: string[]): Promise<void> {
    await this.#cluster
      .release(ids, "the server stopped claiming work")
      .catch((error: unknown) => this.#logger.warn({ err: error, actionIds: ids }, "giving claimed actions back to the queue failed"));
  }

  /** The model types claimed together: those not batched (one call per child), and each batched one (maxSize per child). */
  #claimGroups(): { modelTypes: string[]; perChild: number }[] {
    const { plugins } = this.#deps;
    const unbatched: string[] = [];
    const batched: { modelTypes: string[]; perChild: number }[] = [];
    for (const name of plugins.modelTypeNames()) {
      const batching = plugins.batching(name);
      if (batching) batched.push({ modelTypes: [name], perChild: batching.maxSize });
      else unbatched.push(name);
    }
    return [{ modelTypes: unbatched, perChild: 1 }, ...batched];
  }

  /** What this server claims for: what it can run, the models its children hold (their calls first, for a while). */
  #scope(modelTypes: string[] = this.#deps.plugins.modelTypeNames()): ClaimScope {
    const { plugins, processes } = this.#deps;
    return {
      modelTypes,
      dataAccess: plugins.dataAccessNames(),
      held: [...processes.held()],
      affinityMs: this.#o.claimAffinityMs,
    };
  }

  /** Runs an action this server claimed, from its kept request; one whose request no longer parses here fails. */
  async #runClaimed({ action, request: bytes, modelRevision }: ClaimedAction): Promise<void> {
    const { views, plugins } = this.#deps;
    let parsed: ParsedArgs;
    let jsonForm: JsonForm;
    let checkpoint: Uint8Array | undefined;
    try {
      ({ parsed, jsonForm } = parseRequest(bytes, views, this.#o.limits, (name) => plugins.dataAccess(name) !== undefined));
    } catch (error) {
      const failed = interruptedAction(action, `its request no longer fits this server's plugins: ${(error as Error).message}`);
      await this.#store
        .putAction(failed)
        .catch((e: unknown) => this.#logger.error({ err: e, actionId: action.id }, "storing a failed action failed"));
      return;
    }
    try {
      // An earlier attempt's checkpoint, for this one to resume from.
      if (action.retry && (action.attempt || 1) > 1) checkpoint = (await this.#store.pendingRequest(action.id)).checkpoint;
    } catch (error) {
      // Not read: the action goes back to the queue, for this server or another to take again.
      this.#logger.warn({ err: error, actionId: action.id }, "reading a claimed action's checkpoint failed: it goes back to the queue");
      await this.#cluster.release([action.id], `its checkpoint could not be read: ${(error as Error).message}`).catch(() => {});
      return;
    }
    this.#runs.enter(action.id);
    this.#table.adopt(create(ActionSchema, { ...action, server: this.#cluster.server }), parsed, jsonForm);
    this.#launch(action.id, parsed, action.timeout ? timeoutMillis(action.timeout) : undefined, modelRevision, checkpoint);
  }

  // ---- queued calls ----

  /**
   * A queued call's timeout, counted from its creation while no server has claimed it
   * (the one that claims it counts what is left): one still in the queue then ends
   * FAILED, deadline_exceeded, without waiting for a free child.
   */
  #expireQueued(id: string, timeoutMs: number): void {
    const timer = setTimeout(async () => {
      this.#queueTimers.delete(id);
      if (this.#closing.signal.aborted || this.#runs.has(id) || !this.#unfinished(id)) return;
      try {
        const queued = await this.#cluster.takeQueued(id);
        if (queued) await this.#endQueued(queued, new CancelReason("timeout", `the action did not end within its timeout of ${timeoutMs / 1000} s`));
      } catch (error) {
        this.#logger.warn({ err: error, actionId: id }, "ending a queued action past its timeout failed; the server that claims it ends it");
      }
    }, timeoutMs);
    timer.unref();
    this.#queueTimers.set(id, timer);
  }

  /** Ends a queued action this server took from the queue: cancelled (or timed out) before it started. */
  async #endQueued(view: Action, reason: CancelReason): Promise<Action> {
    this.#table.adopt(view, { args: [], kwargs: {} }, "json");
    const ended = this.#table.finish(view.id, {
      status: reason.by === "timeout" ? ActionStatus.FAILED : ActionStatus.CANCELLED,
      error: create(ActionErrorSchema, { code: reason.kind, message: reason.message }),
      cancel: create(CancelOutcomeSchema, {
        by: reason.by,
        phase: ActionStatus.QUEUED,
        stopDuration: durationFromMs(0),
        cancelledBy: reason.caller,
      }),
      dataAccess: cancelledDataAccess(view.dataAccess),
      endTime: timestampNow(),
    });
    await persist(this.#store, ended.view);
    return ended.view;
  }

  /** Whether the live table holds the action as not ended yet. */
  #unfinished(id: string): boolean {
    const live = this.#table.action(id);
    return live !== undefined && !isEnded(live.view);
  }

  /** Resolves once the action has ended here or in the feed; rejects with the signal's reason first. */
  #ended(id: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
        const waiting = this.#launchWaiters.get(id);
        waiting?.delete(onLaunch);
        if (waiting?.size === 0) this.#launchWaiters.delete(id);
      };
      const done = () => {
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      // Claimed by this server meanwhile: it ends here.
      const onLaunch = () => void this.#runs.get(id)?.done.then(done, done);
      const unsubscribe = this.#o.publisher.subscribe((event) => {
        if (event.kind !== "action_upserted" || event.action.id !== id || !isEnded(event.action)) return;
        // Run here, it has ended once its run has: the feed may bring its end (committed with its revision) first.
        if (this.#runs.has(id)) onLaunch();
        else done();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      const waiting = this.#launchWaiters.get(id) ?? new Set();
      this.#launchWaiters.set(id, waiting.add(onLaunch));
      if (this.#runs.has(id)) onLaunch();
      else if (!this.#unfinished(id)) done();
    });
  }

  /** Resolves when a call on the model ends (as the feed tells it), or after a second; rejects with the signal's reason. */
  #modelCallEnded(modelId: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
      };
      const done = () => {
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      const timer = setTimeout(done, 1000);
      const unsubscribe = this.#o.publisher.subscribe((event) => {
        if (event.kind === "action_upserted" && event.action.modelId === modelId && isEnded(event.action)) done();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  // ---- what the database lost ----

  /**
   * A claim whose answer a broken connection lost leaves the call held by this server and
   * run by none: one held but not run here at two looks in a row is given back (queued
   * again if it had not started, else ended interrupted).
   */
  async #releaseLost(): Promise<void> {
    try {
      const held = (await this.#cluster.owned()).filter((id) => !this.#runs.has(id) && !this.#recording.has(id));
      const lost = held.filter((id) => this.#unaccounted.has(id));
      this.#unaccounted = new Set(held.filter((id) => !lost.includes(id)));
      if (lost.length === 0) return;
      this.#logger.warn(
        { actions: lost },
        "actions this server had claimed but was not running (a claim lost with a broken connection) go back to the queue",
      );
      await this.#cluster.release(
        lost,
        "the server that claimed it lost track of it (its claim's answer was lost with a broken database connection)",
      );
    } catch (error) {
      this.#logger.debug({ err: error }, "looking for lost claims failed; the next look tries again");
    }
  }

  /**
   * Takes an update that did not happen out of its model's queue, trying each second until
   * the database takes it; once this server stops, leaving the cluster takes it out.
   */
  async #dropUpdate(id: string): Promise<void> {
    for (let attempt = 1; !this.#closing.signal.aborted; attempt++) {
      try {
        await this.#cluster.dropUpdate(id);
        return;
      } catch (error) {
        if (attempt === 1) this.#logger.warn({ err: error, update: id }, "taking an update out of its model's queue failed; retrying each second");
      }
      await sleep(1000, undefined, { ref: false });
    }
  }

  /**
   * Stores an ended action the database could not take when it ended, once it can
   * (every second), so that no server sees it running forever. Given up on when this
   * server stops: the others then end it, interrupted, once it has left.
   */
  async #recordEnd(view: Action): Promise<void> {
    this.#recording.add(view.id);
    try {
      for (let attempt = 1; !this.#closing.signal.aborted; attempt++) {
        await sleep(1000, undefined, { ref: false });
        if (this.#closing.signal.aborted) return;
        try {
          await this.#store.putAction(view);
          this.#logger.info({ actionId: view.id, attempt }, "stored the end of an action the database could not take before");
          return;
        } catch {
          // Still unreachable, or this server lost its lease (then it stops).
        }
      }
    } finally {
      this.#recording.delete(view.id);
    }
  }
}
