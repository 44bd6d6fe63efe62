/**
 * Dynamic batching of predicts, for model types that declare `predict: { batch }`: the
 * predicts waiting on one model's revision go to a child as one call of at most
 * maxSize items. A batch forms with its first item and asks for a child once it is full,
 * or maxWaitMs after its first item (at once when a change waits on its model: nothing
 * after the change could join it). It keeps taking items until its child is ready, so no
 * batch waits on a busy child while items queue, and none holds a child idle. Batches
 * never mix models or revisions, and at most maxReplicas of one model's run at once.
 *
 * Each item stays its own action: its own outcome (the plugin may fail one item alone),
 * its own progress, its own cancel. An item cancelled before its batch goes leaves it (an
 * empty batch is withdrawn); one cancelled while its batch runs ends at once while the
 * others go on (the child is told, and drops its result); the batch's call is stopped
 * only when the last item still running is cancelled.
 */
import { EventEmitter } from "node:events";
import type { Value as JsonValuePb } from "@bufbuild/protobuf/wkt";
import { CallKind, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { ChildFailure } from "../process/child.ts";
import { DEFAULT_PRIORITY, type OrderOf, type QueueOrder } from "../process/fair-queue.ts";
import { type BatchItem, type CallOutcome, CallWithdrawn, type ModelRef, type ProcessManager } from "../process/process-manager.ts";
import type { PluginTarget } from "../process/runtimes.ts";
import { newId } from "./ids.ts";

/** How a model type's predicts are batched. */
export interface BatchPolicy {
  maxSize: number;
  maxWaitMs: number;
  /** Batches of one model that may run at once. */
  maxReplicas: number;
}

/** Where an item's batch goes: the model type's plugin, on this revision of the model. */
export interface BatchTarget {
  target: PluginTarget;
  modelType: string;
  model: ModelRef;
  policy: BatchPolicy;
}

/** What the batch an item went in was, when it went. */
export interface BatchInfo {
  id: string;
  size: number;
}

/** One predict, to run in a batch. */
export interface ItemRequest {
  actionId: string;
  args: Value[];
  kwargs: Record<string, Value>;
  /** Aborting it takes the item out (before its batch goes) or stops it in the plugin (while it runs). */
  signal: AbortSignal;
  /** Where the item waits for a child: its batch waits as its highest-priority item does (the oldest of those), as items join. */
  order?: OrderOf | undefined;
  /** Go without waiting for more items: a change waits on the model. */
  hurry?: boolean;
  /** The item's batch went to its child. */
  onStart(batch: BatchInfo): void;
  /** The plugin's latest report for this item (or for the whole batch), with the batch's output so far. */
  onProgress(state: JsonValuePb | undefined, logTail: string[]): void;
}

/** An item's prediction, with the output of the batch it ran in. */
export interface ItemResult {
  value: Value | undefined;
  logTail: string[];
}

/** What batching reports, for metrics: each batch as it goes, with how long each of its items waited. */
export interface BatchEvents {
  batch: [size: number, waitsSeconds: number[]];
}

interface Item extends ItemRequest {
  readonly id: string;
  readonly joined: number;
  settled: boolean;
  resolve(result: ItemResult): void;
  reject(error: unknown): void;
}

interface Batch {
  readonly id: string;
  readonly to: BatchTarget;
  /** Before it goes: its items, in arrival order; once it went: the items sent. */
  items: Item[];
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Full, or waited long enough: it wants a child. */
  ready: boolean;
  /** Its call is with the process manager (waiting for a child, or running). */
  called: boolean;
  /** Its items went to the child: it takes no more. */
  sent: boolean;
  /** Aborted to withdraw the call (no items left) or stop it (every item cancelled). */
  readonly stop: AbortController;
}

/** The batches of one model's revision: those not sent yet, oldest first, and how many calls run. */
interface Line {
  readonly key: string;
  readonly open: Batch[];
  calls: number;
}

export class PredictBatches {
  readonly events = new EventEmitter<BatchEvents>();
  readonly #processes: Pick<ProcessManager, "call">;
  readonly #lines = new Map<string, Line>();
  #nextItem = 1;

  constructor(processes: Pick<ProcessManager, "call">) {
    this.#processes = processes;
  }

  /** Items waiting for their batch to go, over every model. */
  get waiting(): number {
    let n = 0;
    for (const line of this.#lines.values()) for (const batch of line.open) n += batch.items.length;
    return n;
  }

  /**
   * Runs one predict in a batch on `to`'s model revision. Rejects with the item's own
   * failure, the batch call's, or (cancelled) the signal's reason — or, for the last item
   * of a batch still running, the stopped call's failure.
   */
  submit(to: BatchTarget, request: ItemRequest): Promise<ItemResult> {
    request.signal.throwIfAborted();
    const key = `${to.model.modelId}@${to.model.revision}`;
    let line = this.#lines.get(key);
    if (!line) {
      line = { key, open: [], calls: 0 };
      this.#lines.set(key, line);
    }
    const l = line;
    return new Promise<ItemResult>((resolve, reject) => {
      const item: Item = {
        ...request,
        id: String(this.#nextItem++),
        joined: performance.now(),
        settled: false,
        resolve: (result) => {
          if (item.settled) return;
          item.settled = true;
          request.signal.removeEventListener("abort", onAbort);
          resolve(result);
        },
        reject: (error) => {
          if (item.settled) return;
          item.settled = true;
          request.signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const { maxSize, maxWaitMs } = to.policy;
      let batch = l.open.find((b) => b.items.length < maxSize && !b.stop.signal.aborted);
      if (!batch) {
        batch = { id: newId("b"), to, items: [], timer: undefined, ready: false, called: false, sent: false, stop: new AbortController() };
        l.open.push(batch);
        const b = batch;
        if (maxWaitMs > 0 && !request.hurry) b.timer = setTimeout(() => this.#ready(l, b), maxWaitMs);
      }
      const b = batch;
      const onAbort = () => this.#cancel(l, b, item);
      request.signal.addEventListener("abort", onAbort, { once: true });
      b.items.push(item);
      if (b.items.length >= maxSize || maxWaitMs <= 0 || request.hurry) this.#ready(l, b);
    });
  }

  /** A change waits on the model: its batches that are still filling go now. */
  hurry(modelId: string): void {
    for (const line of this.#lines.values()) {
      if (!line.key.startsWith(`${modelId}@`)) continue;
      for (const batch of [...line.open]) this.#ready(line, batch);
    }
  }

  #ready(line: Line, batch: Batch): void {
    clearTimeout(batch.timer);
    batch.timer = undefined;
    if (batch.ready) return;
    batch.ready = true;
    this.#pump(line);
  }

  /** Calls the oldest ready batches, as long as the model has a replica free for them. */
  #pump(line: Line): void {
    for (const batch of line.open) {
      if (line.calls >= batch.to.policy.maxReplicas) break;
      if (batch.ready && !batch.called) this.#call(line, batch);
    }
    this.#tidy(line);
  }

  #call(line: Line, batch: Batch): void {
    batch.called = true;
    line.calls++;
    const { target, modelType, model } = batch.to;
    /** Once the child is ready: the batch is what it holds now. */
    const take = (): BatchItem[] => {
      batch.sent = true;
      const i = line.open.indexOf(batch);
      if (i >= 0) line.open.splice(i, 1);
      const items = batch.items;
      const now = performance.now();
      this.events.emit(
        "batch",
        items.length,
        items.map((item) => (now - item.joined) / 1000),
      );
      const info = { id: batch.id, size: items.length };
      for (const item of items) item.onStart(info);
      return items.map(({ id, actionId, args, kwargs, signal }) => ({ itemId: id, actionId, args, kwargs, signal }));
    };
    const byId = (id: string) => batch.items.find((item) => item.id === id);
    this.#processes
      .call(
        target,
        { kind: CallKind.PREDICT, target: modelType, model, args: [], kwargs: {}, batch: take },
        {
          signal: batch.stop.signal,
          order: () => orderOf(batch.items),
          onProgress: (state, logTail, itemId) => {
            const to = itemId ? [byId(itemId)] : batch.items;
            for (const item of to) if (item && !item.settled) item.onProgress(state, logTail);
          },
        },
      )
      .then(
        (outcome) => this.#answered(batch, outcome),
        (error: unknown) => {
          if (error instanceof CallWithdrawn) return;
          // Not sent (shutting down, the model's bytes unreadable), or the call failed whole.
          const i = line.open.indexOf(batch);
          if (i >= 0) line.open.splice(i, 1);
          for (const item of batch.items) item.reject(error);
        },
      )
      .finally(() => {
        line.calls--;
        this.#pump(line);
      });
  }

  /**
   * Each item's own outcome; a cancelled item's is dropped (it ended when it was
   * cancelled), but for the last one, which stopped the call: it ends with how its child did.
   */
  #answered(batch: Batch, outcome: CallOutcome): void {
    for (const item of batch.items) {
      const result = outcome.items?.get(item.id);
      if (item.signal.aborted && batch.stop.signal.aborted && outcome.exit) {
        item.reject(new ChildFailure("cancelled", "the action was cancelled", "", undefined, { exit: outcome.exit }));
      } else if (item.signal.aborted) item.reject(item.signal.reason);
      else if (!result) item.reject(new Error(`the batch's answer has no outcome for item ${item.id}`));
      else if ("failure" in result) item.reject(result.failure satisfies ChildFailure);
      else item.resolve({ value: result.value, logTail: outcome.logTail });
    }
  }

  #cancel(line: Line, batch: Batch, item: Item): void {
    if (item.settled) return;
    if (!batch.sent) {
      // It leaves the batch; a batch left empty goes nowhere.
      batch.items.splice(batch.items.indexOf(item), 1);
      item.reject(item.signal.reason);
      if (batch.items.length === 0) {
        clearTimeout(batch.timer);
        const i = line.open.indexOf(batch);
        if (i >= 0) line.open.splice(i, 1);
        batch.stop.abort();
        this.#tidy(line);
      }
      return;
    }
    // Running: it ends now (the process manager tells the child), unless it is the last:
    // then the call is stopped, and the item ends with how it stopped.
    if (batch.items.some((other) => other !== item && !other.settled)) item.reject(item.signal.reason);
    else batch.stop.abort(item.signal.reason);
  }

  #tidy(line: Line): void {
    if (line.open.length === 0 && line.calls === 0) this.#lines.delete(line.key);
  }
}

/** A batch waits for its child as its highest-priority item does (the oldest of those, as its caller). */
function orderOf(items: readonly ItemRequest[]): QueueOrder {
  let best: QueueOrder = { priority: DEFAULT_PRIORITY, caller: "" };
  let found = false;
  for (const item of items) {
    const order = typeof item.order === "function" ? item.order() : item.order;
    if (order && (!found || order.priority < best.priority)) best = order;
    found ||= order !== undefined;
  }
  return best;
}
