/**
 * Runs plugin calls in child processes. Never more than maxChildren children alive at
 * once — starting, busy, idle or stopping, handshakes and data-access sub-calls
 * included — and the calls beyond that wait in one queue: by priority, callers taking
 * turns within one (fair-queue.ts).
 *
 * A child that answered its call cleanly goes back to an idle pool for its plugin
 * module and serves the next call without a new spawn (a spawn costs 0.1–1.5 s, a
 * call on a warm child well under a millisecond), and so does one whose plugin threw
 * (its answer says so cleanly). A child that exited, ran out of memory, was cancelled or
 * broke the protocol is never reused. Idle children give up their slot to a
 * waiting call for another module.
 *
 * A warm child keeps the instances it deserialized (resident, within its module's
 * resident_mb); the manager keeps books of what each holds from what its answers say
 * it kept and dropped. A call on a model goes to an idle child holding it, without the
 * instance's bytes; else to the idle child holding least, with them. Forget frames go
 * only to a child between calls, so that none crosses a call's answer.
 *
 * Knows nothing of gRPC, nor of models beyond the revisions its children hold: a call
 * goes in, a result or a ChildFailure comes out.
 */
import { EventEmitter } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { CallKind, type Hello, type Result, type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { MAX_CHECKPOINT_BYTES } from "../../sdk/context.ts";
import { PlinthError } from "../errors.ts";
import type { Settle } from "../wait-in-queue.ts";
import { BundleFolder } from "./bundle-folder.ts";
import { type ChildExit, ChildFailure, type ChildOptions, PluginChild, type ResidentChanges, type ResidentKey } from "./child.ts";
import { FairQueue, type OrderOf } from "./fair-queue.ts";
import { formatHint } from "./format-hint.ts";
import type { NodeBuild } from "./node-entry.ts";
import { bundlePlugin } from "./plugin-bundle.ts";
import { type CallName, childCommand, denoImportMap, type PluginTarget, permissionHint, residentBytesOf } from "./runtimes.ts";

export interface ProcessManagerOptions {
  maxChildren: number;
  sigtermTimeoutMs: number;
  /**
   * A cancelled call is first told over the pipe, and has this long to stop (its child then
   * stays warm) before SIGTERM; 0 or unset: SIGTERM at once.
   */
  cancelGraceMs?: number | undefined;
  checkChildrenPeriodMs: number;
  maxFrameBytes: number;
  logTailLines: number;
  /** Deno's cache directory for deno children. */
  denoDir: string;
  /** Minimum time between two progress frames of one call, in the child. */
  progressIntervalMs: number;
  /** Keep children that answered cleanly for the next call. */
  reuseWorkers: boolean;
  /** A child is retired after this many calls. */
  maxCallsPerWorker: number;
  /** An idle child beyond minIdleWorkers is retired after this long. */
  idleWorkerTimeoutMs: number;
  /** Idle children kept ready per plugin module, when slots are free. */
  minIdleWorkers: number;
  /** Marks this server's children (PLINTH_CHILD=<owner>.<n>): the store's id and this run's. */
  owner: string;
  /** The deno binary; default: the one the npm package `deno` installed. */
  denoBinary?: string | undefined;
  /** The Node child's code as plain JavaScript (node-entry.ts); unset: through tsx. */
  node?: NodeBuild | undefined;
  /** What clients see of paths is relative to this folder (the config's). */
  displayBase?: string | undefined;
  logger: Logger;
  /** Starts a child; default: a PluginChild running the target's command (the fast tests give stand-ins). */
  launch?: ChildLauncher | undefined;
}

/** What the manager uses of a child process. */
export type ChildHandle = Pick<
  PluginChild,
  | "pid"
  | "tail"
  | "exited"
  | "exit"
  | "stopping"
  | "suspended"
  | "hello"
  | "call"
  | "cancelItems"
  | "cancelCall"
  | "checkpointStored"
  | "itemFailure"
  | "forget"
  | "endCall"
  | "terminate"
  | "kill"
  | "reconcile"
>;

export type ChildLauncher = (target: PluginTarget, options: Omit<ChildOptions, "command">) => ChildHandle;

export interface CallOptions {
  /**
   * Aborting it cancels the call: dequeued at once if waiting, else SIGTERM then SIGKILL
   * (a batch not sent yet is withdrawn instead, its child kept).
   */
  signal?: AbortSignal;
  /** Where the call waits for a child among the others: its priority and caller (default: 3, the anonymous caller); a function is read again at each pick. */
  order?: OrderOf | undefined;
  /** The call has a child (it may have waited for a slot until now). */
  onStart?: (pid: number) => void;
  /** The plugin's latest report, with what it printed so far during this call; of one item of a batch when `itemId` is set. */
  onProgress?: (state: JsonValuePb | undefined, logTail: string[], itemId?: string) => void;
  /**
   * Stores a checkpoint the call sent (ctx.checkpoint(value)), with its encoding (as a
   * Value message); the plugin hears once it resolves, or why not. Unset: the call keeps
   * none (data access, a batch).
   */
  onCheckpoint?: (value: Value, encoded: Uint8Array) => Promise<void>;
}

/** A call's checkpoint, bounded, to `store`; `answer` tells the plugin how it went ("" once stored). */
function storeCheckpoint(
  kind: CallName | "batched predict",
  value: Value | undefined,
  store: CallOptions["onCheckpoint"],
  answer: (error: string) => void,
): void {
  const encoded = value ? toBinary(ValueSchema, value) : undefined;
  const bytes = encoded?.byteLength ?? 0;
  const refusal = !store
    ? kind === "batched predict"
      ? "a batched predict keeps no checkpoint: its call serves several actions"
      : `a ${kind} call keeps no checkpoint: the action's own call (instantiate, fit or predict) does`
    : !value
      ? "a checkpoint needs a value"
      : bytes > MAX_CHECKPOINT_BYTES
        ? `the value is ${bytes} bytes encoded, over the ${MAX_CHECKPOINT_BYTES} a checkpoint may hold`
        : "";
  if (refusal || !store || !value || !encoded) {
    answer(refusal);
    return;
  }
  store(value, encoded).then(
    () => answer(""),
    (error: unknown) => answer(`the server could not store it: ${(error as Error).message}`),
  );
}

const kindNames: Record<number, CallName> = {
  [CallKind.INSTANTIATE]: "instantiate",
  [CallKind.FIT]: "fit",
  [CallKind.PREDICT]: "predict",
  [CallKind.DATA_ACCESS]: "data_access",
};

/** One predict of a batch call. */
export interface BatchItem {
  /** Unique within the call. */
  itemId: string;
  actionId: string;
  args: Value[];
  kwargs: Record<string, Value>;
  /** Aborting it stops this item in the plugin (CancelItems) while the batch goes on. */
  signal: AbortSignal;
}

/** An item's outcome in a batch call: its prediction, or its own failure. */
export type ItemResult = { value: Value | undefined } | { failure: ChildFailure };

/** A batch call whose items were all gone when its child was ready: nothing was sent, the child is kept. */
export class CallWithdrawn extends Error {
  constructor() {
    super("the batch had no items left when its child was ready");
    this.name = "CallWithdrawn";
  }
}

export type { ResidentKey };

/** The model a call runs on: its bytes are read only when the child that gets the call does not hold it. */
export interface ModelRef extends ResidentKey {
  /** The serialized instance's size in bytes. */
  size: number;
  bytes(): Promise<Uint8Array>;
}

/** A call to make in a child; the manager assigns its call id. */
export interface PluginCall {
  kind: CallKind;
  target: string;
  /** Fit and predict: the model's revision the call runs on. */
  model?: ModelRef | undefined;
  /** What an instance the call returns becomes once stored: the child keeps it resident under this revision. */
  nextRevision?: bigint | undefined;
  args: Value[];
  kwargs: Record<string, Value>;
  /**
   * A batch of predicts: its items, taken once the call's child is ready (items may join
   * while the call waits for one); none left withdraws the call (CallWithdrawn).
   */
  batch?: (() => readonly BatchItem[]) | undefined;
  /** The action's attempt (ctx.info.attempt); unset: 1. */
  attempt?: number;
  /** The checkpoint an earlier attempt stored (ctx.info.checkpoint). */
  checkpoint?: Value;
}

/** A call as it goes to the child: its model by id and revision, with the bytes or as the resident it holds. */
export type SentCall = Omit<PluginCall, "model" | "nextRevision" | "batch"> & {
  items?: Omit<BatchItem, "signal">[];
  callId: string;
  modelId?: string;
  revision: bigint;
  resident: boolean;
  instance?: Uint8Array;
  nextRevision: bigint;
};

export interface CallOutcome {
  result: Result;
  /** A batch call's outcome of each item, by item id. */
  items?: Map<string, ItemResult>;
  logTail: string[];
  /** The child had served calls before this one. */
  warm: boolean;
  /** How its child ended, when it was not kept (it answered, then stopped: a batch whose every item was cancelled). */
  exit?: ChildExit | undefined;
}

interface Worker {
  readonly key: string;
  readonly target: PluginTarget;
  readonly child: ChildHandle;
  /** Settles with the hello once the plugin module has loaded. */
  readonly ready: Promise<Hello>;
  /** Set once the plugin has said hello. */
  hello?: Hello;
  calls: number;
  idleSince: number;
  /** What the child holds resident, as its answers said: each model's revisions and their sizes in bytes. */
  readonly residents: Map<string, Map<bigint, number>>;
  residentBytes: number;
  /** Forgets asked for while it ran a call: sent once the call has ended and its answer is in the books. */
  readonly forgets: { modelId: string; keep: bigint | undefined }[];
}

interface Waiter extends Settle<Worker> {
  key: string;
  target: PluginTarget;
  /** The model the call runs on: an idle child holding it is taken first. */
  model: ResidentKey | undefined;
}

const keyOf = (t: PluginTarget) =>
  `${t.runtime}\0${t.module}\0${JSON.stringify(t.permissions ?? {})}\0${t.maxMemoryMb ?? ""}\0${t.residentMb ?? ""}\0${t.env ?? ""}\0${t.generation ?? 0}`;

/** What the manager reports as it goes: for metrics, logs and tests. */
export interface ProcessEvents {
  spawn: [pid: number];
  exit: [pid: number, exit: ChildExit];
  /** A call on a model went to a child: as the resident it holds (no bytes), or with the instance's bytes. */
  instance: [resident: boolean, bytes: number];
}

/** A call that never reached its child: its model's bytes could not be read. The child is as it was. */
class NotSent {
  readonly cause: unknown;
  constructor(cause: unknown) {
    this.cause = cause;
  }
}

/** How long after a call ends (or a child dies) the idle children are topped up to min_idle_workers. */
export const PREWARM_AFTER_MS = 20;

export class ProcessManager {
  /** "spawn" and "exit" of every child, and each instance sent. */
  readonly events = new EventEmitter<ProcessEvents>();
  readonly #o: ProcessManagerOptions;
  readonly #workers = new Set<Worker>();
  /** Idle workers per module, most recently used last. */
  readonly #idle = new Map<string, Worker[]>();
  readonly #queue = new FairQueue<Waiter>();
  /** Workers asked to stop whose slot is not free yet. */
  readonly #stopping = new Set<Worker>();
  /** Every module that has answered a call, to keep minIdleWorkers ready. */
  readonly #targets = new Map<string, PluginTarget>();
  /** Modules whose last start failed: not prewarmed, or a broken module would respawn forever. */
  readonly #failing = new Set<string>();
  /** Modules whose code was reloaded: their children stop once their call ends. */
  readonly #retired = new Set<string>();
  /** Models found larger than their module's resident_mb, warned about once each. */
  readonly #tooLarge = new Set<string>();
  /** Each Node target's plugin built to JavaScript (plugin-bundle.ts), once it is described; none: through tsx. */
  readonly #bundles = new WeakMap<PluginTarget, string | undefined>();
  readonly #bundleFolder = new BundleFolder();
  #importMapFile: string | undefined;
  readonly #timer: ReturnType<typeof setInterval>;
  /** The prewarm to come, if one is due. */
  #prewarmTimer: ReturnType<typeof setTimeout> | undefined;
  #nextCallId = 1;
  #nextChild = 1;
  #closed = false;
  /** Stopping: no idle child is started any more. */
  #draining = false;

  constructor(options: ProcessManagerOptions) {
    this.#o = options;
    this.#timer = setInterval(() => this.#maintain(), options.checkChildrenPeriodMs);
    this.#timer.unref();
  }

  /** Children alive now: starting, busy, idle or stopping. */
  get live(): number {
    return this.#workers.size;
  }

  /** Idle children ready for a call. */
  get idle(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Children by what they do now: for metrics. */
  counts(): { live: number; idle: number; starting: number; busy: number } {
    const live = this.#workers.size;
    const idle = this.idle;
    let starting = 0;
    for (const worker of this.#workers) if (!worker.hello) starting++;
    return { live, idle, starting, busy: Math.max(0, live - idle - starting - this.#stopping.size) };
  }

  /** Calls waiting for a child. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Pids of the children alive now. */
  pids(): number[] {
    return [...this.#workers].map((w) => w.child.pid);
  }

  /** The models some child not stopping holds a revision of. */
  held(): Set<string> {
    const held = new Set<string>();
    for (const worker of this.#workers) if (!worker.child.stopping) for (const id of worker.residents.keys()) held.add(id);
    return held;
  }

  /** The serialized size of every instance the children hold resident, by the books. */
  residentBytes(): number {
    let bytes = 0;
    for (const worker of this.#workers) bytes += worker.residentBytes;
    return bytes;
  }

  /**
   * The children drop the model's revisions but `keep` (all of them without it): one
   * not current any more, or never stored. Idle children are told now; busy ones once
   * their call has ended (a Forget sent during a call would cross its answer's kept).
   */
  forget(modelId: string, keep?: bigint): void {
    const forget = { modelId, keep };
    for (const worker of this.#workers) {
      if (!worker.residents.has(modelId)) continue;
      if (this.#isIdle(worker) || worker.child.stopping) this.#forget(worker, [forget]);
      else worker.forgets.push(forget);
    }
  }

  /** The most children alive at once (engine.max_children). */
  get maxChildren(): number {
    return this.#o.maxChildren;
  }

  /** Starts the plugin module (or takes an idle child of it) and reads its manifest. */
  async describe(target: PluginTarget, signal?: AbortSignal): Promise<Hello> {
    if (this.#unbuilt(target)) await this.#bundle(target);
    const worker = await this.#lease(target, signal);
    try {
      const hello = await worker.ready;
      this.#release(worker, true);
      return hello;
    } catch (error) {
      this.#release(worker, false);
      await worker.child.exited;
      throw this.#withTail(error, worker);
    }
  }

  /**
   * Runs one call. Rejects with ChildFailure, with the signal's reason if cancelled while
   * queued, or with what the model's bytes() threw.
   */
  async call(target: PluginTarget, call: PluginCall, options: CallOptions = {}): Promise<CallOutcome> {
    const { signal } = options;
    // Once sent, a call that neither reports progress nor heartbeats for this long is
    // stopped as a cancel is (SIGTERM, then SIGKILL), and fails stalled.
    const kind = kindNames[call.kind];
    const heartbeatMs = kind ? target.heartbeatMs?.[kind] : undefined;
    const worker = await this.#lease(target, signal, call.model, options.order);
    // A batch not sent yet is withdrawn, not killed: its child has done nothing for it.
    let sent = false;
    // A call silent past its heartbeat timeout is stopped, and fails stalled.
    let stalled = false;
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    const alive = () => {
      if (heartbeatMs === undefined || stalled) return;
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled = true;
        void worker.child.terminate(this.#o.sigtermTimeoutMs);
      }, heartbeatMs);
    };
    // A cancel is first a message: a plugin that stops within the grace keeps its child.
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      const grace = this.#o.cancelGraceMs ?? 0;
      if (sent && grace > 0 && worker.child.cancelCall()) {
        graceTimer = setTimeout(() => void worker.child.terminate(this.#o.sigtermTimeoutMs), grace);
        return;
      }
      if (sent || !call.batch) void worker.child.terminate(this.#o.sigtermTimeoutMs);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (signal?.aborted) onAbort();
      options.onStart?.(worker.child.pid);
      await worker.ready;
      const items = call.batch && !signal?.aborted ? call.batch() : undefined;
      if (call.batch && !items?.length) {
        this.#release(worker, true);
        throw new CallWithdrawn();
      }
      sent = true;
      const warm = worker.calls > 0;
      worker.calls++;
      worker.child.tail.clear();
      alive();
      const result = await this.#send(
        worker,
        call,
        items,
        (state, itemId) => {
          alive();
          options.onProgress?.(state, worker.child.tail.lines(), itemId);
        },
        alive,
        (_seq, value, answer) => {
          alive();
          storeCheckpoint(call.batch ? "batched predict" : (kind ?? "predict"), value, options.onCheckpoint, answer);
        },
      );
      if (signal?.aborted && !items) {
        // Cancelled, it answered all the same: the action is cancelled, the child kept.
        await this.#endCall(worker);
        if (!this.#release(worker, true)) await worker.child.exited;
        throw new ChildFailure("cancelled", "the action was cancelled");
      }
      const outcome: CallOutcome = { result, logTail: await this.#endCall(worker), warm };
      if (items) outcome.items = this.#itemResults(worker, result);
      // A child not kept for the next call is gone before its action ends.
      if (!this.#release(worker, true)) outcome.exit = await worker.child.exited;
      return outcome;
    } catch (error) {
      if (error instanceof CallWithdrawn) throw error;
      if (error instanceof NotSent) {
        this.#release(worker, true);
        throw error.cause;
      }
      if (stalled) {
        this.#release(worker, false);
        await worker.child.exited;
        const key = `${target.key ?? "plugins[]"}.heartbeat_timeout`;
        const why = `${kind} of ${call.target} neither reported progress nor called ctx.heartbeat() for ${heartbeatMs! / 1000} s (${key}): stopped`;
        throw this.#withTail(new ChildFailure("stalled", why), worker);
      }
      // The plugin threw and its child answered so: the child is sound, and keeps its residents.
      if (error instanceof ChildFailure && error.code === "plugin_error" && !error.residentMissing && !worker.child.stopping) {
        await this.#endCall(worker);
        // Told to stop, it stopped (its signal's abort, or whatever it threw then): a cancel.
        const stopped = signal?.aborted ? new ChildFailure("cancelled", "the action was cancelled", error.pluginStack) : error;
        const failure = this.#withTail(stopped, worker);
        if (!this.#release(worker, true)) await worker.child.exited;
        throw failure;
      }
      this.#release(worker, false);
      // The slot frees, and the cancel outcome is known, only once the process is gone.
      await worker.child.exited;
      throw this.#withTail(error, worker);
    } finally {
      clearTimeout(stallTimer);
      clearTimeout(graceTimer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * A call its child answered has ended: what the plugin printed before answering has
   * arrived (stderr is another pipe), and what it started during the call ends with it,
   * even when the child stays warm. Returns the call's log tail.
   */
  async #endCall(worker: Worker): Promise<string[]> {
    await new Promise(setImmediate);
    const logTail = worker.child.tail.lines();
    const killed = worker.child.endCall();
    if (killed.length > 0) this.#o.logger.debug({ pid: worker.child.pid, killed }, "killed what a plugin started during its call");
    return logTail;
  }

  /**
   * Sends the call to the worker's child and waits for its answer, keeping the books of
   * what the child holds. A child that does not hold the resident its books said it
   * does (ResidentMissing) gets the call again once, with the bytes.
   */
  async #send(
    worker: Worker,
    call: PluginCall,
    items: readonly BatchItem[] | undefined,
    onProgress: (state: JsonValuePb | undefined, itemId: string) => void,
    onHeartbeat: () => void,
    onCheckpoint: (seq: number, value: Value | undefined, answer: (error: string) => void) => void,
  ): Promise<Result> {
    const { model, nextRevision = 0n, batch: _batch, ...rest } = call;
    if (model) this.#warnTooLarge(worker.target, model);
    for (let attempt = 1; ; attempt++) {
      const resident = model !== undefined && attempt === 1 && this.#holds(worker, model);
      let instance: Uint8Array | undefined;
      try {
        if (model && !resident) instance = await model.bytes();
      } catch (error) {
        throw new NotSent(error);
      }
      const sent: SentCall = {
        ...rest,
        callId: String(this.#nextCallId++),
        ...(model ? { modelId: model.modelId } : {}),
        revision: model?.revision ?? 0n,
        resident,
        ...(instance ? { instance } : {}),
        nextRevision,
        ...(items ? { items: items.map(({ signal: _signal, ...item }) => item) } : {}),
      };
      const answer = worker.child.call(sent, onProgress, onHeartbeat, (seq, value) =>
        onCheckpoint(seq, value, (error) => worker.child.checkpointStored(sent.callId, seq, error)),
      );
      // An item cancelled while its batch runs is stopped in the plugin; the others go on.
      const stopItems = (items ?? []).map(({ itemId, signal }) => {
        const cancel = () => worker.child.cancelItems(sent.callId, [itemId]);
        if (signal.aborted) cancel();
        else signal.addEventListener("abort", cancel, { once: true });
        return () => signal.removeEventListener("abort", cancel);
      });
      void answer
        .finally(() => {
          for (const stop of stopItems) stop();
        })
        .catch(() => {});
      if (model) this.events.emit("instance", resident, instance?.byteLength ?? 0);
      // What a kept ref weighs: the call's model, or the instance it returned.
      const sizeOf = (ref: ResidentKey, returned: Uint8Array | undefined) =>
        model && ref.modelId === model.modelId
          ? ref.revision === model.revision
            ? model.size
            : ref.revision === nextRevision
              ? (returned?.byteLength ?? 0)
              : 0
          : 0;
      try {
        const result = await answer;
        this.#book(worker, result, (ref) => sizeOf(ref, result.instance));
        return result;
      } catch (error) {
        if (!(error instanceof ChildFailure)) throw error;
        this.#book(worker, error.residents, (ref) => sizeOf(ref, undefined));
        if (!(error.residentMissing && resident && model)) throw error;
        // Our books were wrong: it does not hold the model. Once more, with the bytes.
        this.#unbook(worker, model);
        this.#o.logger.debug(
          { pid: worker.child.pid, modelId: model.modelId, revision: model.revision },
          "resident instance missing: sent again with its bytes",
        );
      }
    }
  }

  /** A batch's item outcomes, an item's failure as a call's would be (its hint, the batch's output). */
  #itemResults(worker: Worker, result: Result): Map<string, ItemResult> {
    const items = new Map<string, ItemResult>();
    for (const { itemId, outcome } of result.items) {
      items.set(
        itemId,
        outcome.case === "failure"
          ? { failure: this.#withTail(worker.child.itemFailure(outcome.value), worker) as ChildFailure }
          : { value: outcome.value },
      );
    }
    return items;
  }

  /** A model its module's children can never keep is sent with every call: say so once. */
  #warnTooLarge(target: PluginTarget, model: ModelRef): void {
    const budget = residentBytesOf(target);
    if (budget === 0 || model.size <= budget || this.#tooLarge.has(model.modelId)) return;
    this.#tooLarge.add(model.modelId);
    const key = `${target.key ?? "plugins[]"}.resident_mb`;
    this.#o.logger.warn(
      { modelId: model.modelId, size: model.size, residentMb: target.residentMb },
      `model ${model.modelId} (${model.size} bytes) is larger than ${key} (${target.residentMb} MiB): no child keeps it, so its instance is sent and deserialized with every call; raise ${key} to keep it resident`,
    );
  }

  #holds(worker: Worker, ref: ResidentKey): boolean {
    return worker.residents.get(ref.modelId)?.has(ref.revision) ?? false;
  }

  /** An answer's changes into the child's books: kept, then dropped. */
  #book(worker: Worker, changes: ResidentChanges, sizeOf: (ref: ResidentKey) => number): void {
    for (const ref of changes.kept) {
      const revisions = worker.residents.get(ref.modelId) ?? new Map<bigint, number>();
      worker.residents.set(ref.modelId, revisions);
      worker.residentBytes -= revisions.get(ref.revision) ?? 0;
      const size = sizeOf(ref);
      revisions.set(ref.revision, size);
      worker.residentBytes += size;
    }
    for (const ref of changes.dropped) this.#unbook(worker, ref);
  }

  #unbook(worker: Worker, ref: ResidentKey): void {
    const revisions = worker.residents.get(ref.modelId);
    const size = revisions?.get(ref.revision);
    if (size === undefined) return;
    revisions!.delete(ref.revision);
    if (revisions!.size === 0) worker.residents.delete(ref.modelId);
    worker.residentBytes -= size;
  }

  /** Takes the forgotten revisions out of the books and tells the child (unless it is stopping: it is going anyway). */
  #forget(worker: Worker, forgets: readonly { modelId: string; keep: bigint | undefined }[]): void {
    const refs: ResidentKey[] = [];
    for (const { modelId, keep } of forgets) {
      for (const revision of [...(worker.residents.get(modelId)?.keys() ?? [])]) {
        if (revision === keep) continue;
        this.#unbook(worker, { modelId, revision });
        refs.push({ modelId, revision });
      }
    }
    if (refs.length > 0 && !worker.child.stopping) worker.child.forget(refs);
  }

  #isIdle(worker: Worker): boolean {
    return this.#idle.get(worker.key)?.includes(worker) ?? false;
  }

  /** Starts min_idle_workers per known module now and waits until they are ready (or failed). */
  async warmUp(): Promise<void> {
    this.#prewarm();
    const idle = [...this.#idle.values()].flat();
    await Promise.allSettled(idle.map((w) => w.ready));
  }

  /**
   * The module's code has changed (a newer generation took its place): its idle children
   * stop now, busy ones once their call ends, and none is started for it again.
   */
  retireTarget(target: PluginTarget): void {
    const key = keyOf(target);
    this.#retired.add(key);
    this.#targets.delete(key);
    for (const worker of [...(this.#idle.get(key) ?? [])]) this.#retire(worker);
    this.#idle.delete(key);
  }

  /** Refuses new calls, fails queued ones, stops every child and waits until all are gone. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#timer);
      clearTimeout(this.#prewarmTimer);
      const error = new PlinthError("shutting_down", "the server is shutting down");
      for (const waiter of this.#queue.clear()) waiter.reject(error);
    }
    await Promise.all([...this.#workers].map((w) => w.child.terminate(this.#o.sigtermTimeoutMs)));
    this.#bundleFolder.remove();
    this.#importMapFile = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The server is stopping: start no more idle children. Calls still run. */
  drain(): void {
    this.#draining = true;
  }

  /** SIGKILL now to every child, its group and everything it started. */
  kill(): void {
    this.#draining = true;
    for (const worker of this.#workers) worker.child.kill();
  }

  #lease(target: PluginTarget, signal?: AbortSignal, model?: ResidentKey, order?: OrderOf): Promise<Worker> {
    signal?.throwIfAborted();
    if (this.#closed) return Promise.reject(new PlinthError("shutting_down", "the server is shutting down"));
    const key = keyOf(target);
    const leased = new Promise<Worker>((resolve, reject) => {
      const onAbort = () => {
        this.#queue.remove(waiter);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        key,
        target,
        model,
        resolve: (worker) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(worker);
        },
        reject: (reason) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter, order);
    });
    this.#schedule();
    return leased;
  }

  /** Gives waiting calls a child, in the queue's order, as long as there is one to give. */
  #schedule(): void {
    while (this.#queue.length > 0) {
      const head = this.#queue.peek()!;
      const idle = this.#takeIdle(head.key, head.model);
      if (idle) {
        this.#queue.shift();
        head.resolve(idle);
        continue;
      }
      if (this.#workers.size < this.#o.maxChildren) {
        this.#queue.shift();
        head.resolve(this.#spawn(head.target, head.key));
        continue;
      }
      // Full: idle children of other modules give up their slots to the queue.
      while (this.#stopping.size < this.#queue.length) {
        const victim = this.#oldestIdle();
        if (!victim) break;
        this.#retire(victim);
      }
      return;
    }
    // spawn() blocks the event loop for milliseconds: keep it off the path of the call
    // that just ended (a child that died: its call's failure), whose answer goes out
    // first; one timer for every call that ends meanwhile.
    if (this.#o.reuseWorkers && this.#o.minIdleWorkers > 0 && !this.#prewarmTimer) {
      this.#prewarmTimer = setTimeout(() => {
        this.#prewarmTimer = undefined;
        this.#prewarm();
      }, PREWARM_AFTER_MS);
    }
  }

  /** Whether a Node plugin is still to be built for its children to load without tsx (once per target: a reload makes a new one). */
  #unbuilt(target: PluginTarget): boolean {
    return target.runtime === "node" && this.#o.node !== undefined && !this.#o.launch && !this.#bundles.has(target);
  }

  async #bundle(target: PluginTarget): Promise<void> {
    const node = this.#o.node!;
    // A plugin under the permission model is not built: the server would read for it, as
    // its own user, every file it imports, where the plugin may not read them itself.
    const built = target.permissions
      ? { why: "it runs under the permission model (permissions)" }
      : await Promise.resolve()
          // The folder too: a temporary folder that cannot be written leaves the plugin to tsx.
          .then(() => bundlePlugin(target.module, node, this.#bundleFolder.path))
          .catch((error: Error) => ({ why: error.message }));
    if (typeof built !== "string") this.#o.logger.info({ plugin: target.label ?? target.module, why: built.why }, "plugin loads through tsx");
    this.#bundles.set(target, typeof built === "string" ? built : undefined);
  }

  /** A Deno child's import map (denoImportMap), written once into the server's own folder. */
  #importMap(target: PluginTarget): string | undefined {
    if (target.runtime !== "deno") return undefined;
    if (this.#importMapFile === undefined) {
      const file = join(this.#bundleFolder.path, "deno-import-map.json");
      writeFileSync(file, denoImportMap());
      this.#importMapFile = file;
    }
    return this.#importMapFile;
  }

  #spawn(target: PluginTarget, key: string): Worker {
    const { maxFrameBytes, logTailLines, launch } = this.#o;
    const options = {
      mark: `${this.#o.owner}.${this.#nextChild++}`,
      maxFrameBytes,
      logTailLines,
      label: target.label ?? target.module,
      displayBase: this.#o.displayBase,
    };
    const child = launch
      ? launch(target, options)
      : new PluginChild({ ...options, command: childCommand(target, this.#o, this.#bundles.get(target), this.#importMap(target)) });
    const ready = child.hello();
    ready.then(
      () => this.#failing.delete(key),
      () => this.#failing.add(key), // Whoever uses the worker awaits it too; a prewarmed one may have none.
    );
    const worker: Worker = {
      key,
      target,
      child,
      ready,
      calls: 0,
      idleSince: performance.now(),
      residents: new Map(),
      residentBytes: 0,
      forgets: [],
    };
    void ready.then(
      (hello) => (worker.hello = hello),
      () => {},
    );
    this.#workers.add(worker);
    void child.exited.then((exit) => this.#gone(worker, exit));
    this.#o.logger.debug({ pid: child.pid, module: target.module }, "plugin child started");
    this.events.emit("spawn", child.pid);
    return worker;
  }

  #gone(worker: Worker, exit: ChildExit): void {
    // What it held went with it.
    worker.residents.clear();
    worker.residentBytes = 0;
    worker.forgets.length = 0;
    this.#workers.delete(worker);
    this.#stopping.delete(worker);
    this.#removeIdle(worker);
    this.#o.logger.debug({ pid: worker.child.pid, calls: worker.calls, ...exit }, "plugin child exited");
    if (!this.#closed) this.#schedule();
    this.events.emit("exit", worker.child.pid, exit);
  }

  /** Returns the worker to the idle pool, or retires it; true if it was kept. */
  #release(worker: Worker, reusable: boolean): boolean {
    const { reuseWorkers, maxCallsPerWorker } = this.#o;
    const current = !this.#retired.has(worker.key);
    const forgets = worker.forgets.splice(0);
    if (reusable && reuseWorkers && current && !this.#closed && !worker.child.stopping && worker.calls < maxCallsPerWorker) {
      // Its call has ended and its answer is in the books: what was forgotten meanwhile goes now.
      this.#forget(worker, forgets);
      worker.idleSince = performance.now();
      const list = this.#idle.get(worker.key) ?? [];
      list.push(worker);
      this.#idle.set(worker.key, list);
      // From now on this module is kept warm (min_idle_workers).
      this.#targets.set(worker.key, worker.target);
      this.#schedule();
      return true;
    }
    this.#retire(worker);
    return false;
  }

  /** Stops a worker that is not running a call; its slot frees when it has exited. */
  #retire(worker: Worker): void {
    this.#removeIdle(worker);
    if (worker.child.exit) return;
    this.#stopping.add(worker);
    void worker.child.terminate(this.#o.sigtermTimeoutMs);
  }

  /**
   * An idle child of a module that is not stopped, for a call on `model`: one holding it,
   * else the one holding least (the most recently used of those); stopped ones are
   * killed on the way.
   */
  #takeIdle(key: string, model: ResidentKey | undefined): Worker | undefined {
    const list = this.#idle.get(key);
    for (;;) {
      let chosen: Worker | undefined;
      for (let i = (list?.length ?? 0) - 1; i >= 0; i--) {
        const worker = list![i]!;
        if (model && this.#holds(worker, model)) {
          chosen = worker;
          break;
        }
        if (!chosen || worker.residentBytes < chosen.residentBytes) chosen = worker;
      }
      if (!chosen) return undefined;
      this.#removeIdle(chosen);
      if (!chosen.child.suspended) return chosen;
      this.#discardStopped(chosen);
    }
  }

  /** A stopped child is not a warm one: SIGTERM would wait for it to be continued, so SIGKILL its group now. */
  #discardStopped(worker: Worker): void {
    this.#o.logger.warn({ pid: worker.child.pid, module: worker.target.module }, "idle plugin child was stopped (SIGSTOP): killed");
    this.#removeIdle(worker);
    this.#stopping.add(worker);
    worker.child.kill();
  }

  #removeIdle(worker: Worker): void {
    const list = this.#idle.get(worker.key);
    const i = list?.indexOf(worker) ?? -1;
    if (i >= 0) list!.splice(i, 1);
  }

  #oldestIdle(): Worker | undefined {
    let oldest: Worker | undefined;
    for (const list of this.#idle.values()) {
      const first = list[0];
      if (first && (!oldest || first.idleSince < oldest.idleSince)) oldest = first;
    }
    return oldest;
  }

  /** Keeps minIdleWorkers ready per module while slots are free and nothing waits. */
  #prewarm(): void {
    if (!this.#o.reuseWorkers || this.#closed || this.#draining || this.#queue.length > 0) return;
    for (const [key, target] of this.#targets) {
      if (this.#failing.has(key)) continue;
      const list = this.#idle.get(key) ?? [];
      this.#idle.set(key, list);
      while (list.length < this.#o.minIdleWorkers && this.#workers.size < this.#o.maxChildren) {
        list.unshift(this.#spawn(target, key));
      }
    }
  }

  #withTail(error: unknown, worker: Worker): unknown {
    if (!(error instanceof ChildFailure)) return error;
    const base = this.#o.displayBase;
    return error.with({
      message: formatHint(permissionHint(error.message, worker.target, base), base),
      logTail: worker.child.tail.lines(),
      exit: worker.child.exit,
    });
  }

  /**
   * Every check_children_period: reconcile our books with the operating system (a
   * child gone or a zombie without an exit event fails its call and frees its slot),
   * kill idle children that were stopped, and retire children idle for longer than
   * idle_worker_timeout.
   */
  #maintain(): void {
    for (const worker of this.#workers) {
      if (!worker.child.reconcile()) {
        this.#o.logger.warn({ pid: worker.child.pid }, "plugin child vanished without an exit event");
      }
    }
    for (const list of this.#idle.values()) for (const worker of [...list]) if (worker.child.suspended) this.#discardStopped(worker);
    const cutoff = performance.now() - this.#o.idleWorkerTimeoutMs;
    for (const list of this.#idle.values()) {
      while (list.length > this.#o.minIdleWorkers && list[0]!.idleSince < cutoff) this.#retire(list[0]!);
    }
  }
}
