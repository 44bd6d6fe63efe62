/**
 * Dynamic batching's rules, over a process manager stand-in and a fake clock: when a batch
 * goes, what it holds, that models and revisions never mix, max_replicas, each item's own
 * outcome and cancel.
 */
import { create, type JsonValue } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ResultSchema, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type BatchInfo, type BatchPolicy, type ItemRequest, PredictBatches } from "../../server/engine/predict-batches.ts";
import { ChildFailure } from "../../server/process/child.ts";
import {
  type BatchItem,
  type CallOptions,
  type CallOutcome,
  CallWithdrawn,
  type ItemResult,
  type PluginCall,
} from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { workerJson } from "../helpers/fake-child.ts";
import { STOPPED } from "../helpers/fake-plugins.ts";
import { settle, track } from "../helpers/fast-engine.ts";

const target: PluginTarget = { module: "batched.ts", runtime: "node" };
const json = (value: JsonValue): Value => workerJson(value);
const text = (value: Value | undefined) => (value?.kind.case === "jsonUtf8" ? JSON.parse(new TextDecoder().decode(value.kind.value)) : undefined);

/** One call the batches made: the child is granted with ready(), then answered or failed. */
class FakeCall {
  readonly call: PluginCall;
  readonly options: CallOptions;
  /** The items sent, once ready() took them. */
  items: BatchItem[] | undefined;
  withdrawn = false;
  readonly #resolve: (outcome: CallOutcome) => void;
  readonly #reject: (error: unknown) => void;

  constructor(call: PluginCall, options: CallOptions, resolve: (outcome: CallOutcome) => void, reject: (error: unknown) => void) {
    this.call = call;
    this.options = options;
    this.#resolve = resolve;
    this.#reject = reject;
    // As the process manager: aborted while waiting for a child, it leaves the queue; once
    // sent, its child is stopped and the call fails with how it ended.
    options.signal?.addEventListener("abort", () => {
      if (!this.items) {
        this.withdrawn = true;
        reject(options.signal?.reason);
      } else {
        reject(new ChildFailure("cancelled", "the action was cancelled", "", undefined, { exit: STOPPED }));
      }
    });
  }

  /** A child is ready: the batch's items go, or the call is withdrawn if none are left. */
  ready(): BatchItem[] {
    const items = this.call.batch!();
    if (items.length === 0) {
      this.withdrawn = true;
      this.#reject(new CallWithdrawn());
      return [];
    }
    this.items = [...items];
    return this.items;
  }

  /** Each item's value (its args[0] doubled), or a failure for those named. */
  answer(failing: number[] = []): void {
    const items = new Map<string, ItemResult>();
    for (const item of this.items!) {
      const n = text(item.args[0]) as number;
      items.set(item.itemId, failing.includes(n) ? { failure: new ChildFailure("plugin_error", `item ${n} failed`) } : { value: json(n * 2) });
    }
    this.#resolve({ result: create(ResultSchema, {}), items, logTail: ["batch log"], warm: true });
  }

  fail(error: unknown): void {
    this.#reject(error);
  }
}

class FakeProcesses {
  readonly calls: FakeCall[] = [];
  call(_target: PluginTarget, call: PluginCall, options: CallOptions = {}): Promise<CallOutcome> {
    return new Promise((resolve, reject) => this.calls.push(new FakeCall(call, options, resolve, reject)));
  }
}

let processes: FakeProcesses;
let batches: PredictBatches;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
  processes = new FakeProcesses();
  batches = new PredictBatches(processes);
});
afterEach(() => {
  vi.useRealTimers();
});

const policy = (p: Partial<BatchPolicy> = {}): BatchPolicy => ({ maxSize: 4, maxWaitMs: 1000, maxReplicas: 2, ...p });

/** A predict of `n` on model@revision, with its starts, progress and an abort of its own. */
function submit(n: number, p: BatchPolicy, more: { model?: string; revision?: bigint; hurry?: boolean } = {}) {
  const controller = new AbortController();
  const starts: BatchInfo[] = [];
  const progress: unknown[] = [];
  const model = { modelId: more.model ?? "m1", revision: more.revision ?? 1n, size: 8, bytes: async () => new Uint8Array(8) };
  const request: ItemRequest = {
    actionId: `a${n}`,
    args: [json(n)],
    kwargs: {},
    signal: controller.signal,
    ...(more.hurry ? { hurry: true } : {}),
    onStart: (info) => starts.push(info),
    onProgress: (state) => progress.push(state?.kind.value),
  };
  const result = track(batches.submit({ target, modelType: "batched.Model", model, policy: p }, request));
  return { result, starts, progress, cancel: () => controller.abort(new Error(`cancelled ${n}`)) };
}

const values = (items: BatchItem[] | undefined) => items?.map((item) => text(item.args[0]));

describe("PredictBatches", () => {
  test("a full batch goes at once; one that is not waits max_wait_ms from its first item", async () => {
    const p = policy({ maxSize: 3, maxWaitMs: 50 });
    const full = [1, 2, 3].map((n) => submit(n, p));
    expect(processes.calls).toHaveLength(1);
    expect(values(processes.calls[0]!.ready())).toEqual([1, 2, 3]);
    const alone = submit(4, p);
    await vi.advanceTimersByTimeAsync(49);
    expect(processes.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(processes.calls).toHaveLength(2);
    expect(values(processes.calls[1]!.ready())).toEqual([4]);
    processes.calls[0]!.answer();
    processes.calls[1]!.answer();
    await settle();
    expect(full.map((f) => text(f.result.value?.value))).toEqual([2, 4, 6]);
    expect(text(alone.result.value?.value)).toBe(8);
    expect(full[0]!.starts).toEqual([{ id: expect.any(String), size: 3 }]);
    expect(alone.starts[0]!.id).not.toBe(full[0]!.starts[0]!.id);
  });

  test("max_wait_ms 0 goes at once, and the batch takes what arrives until its child is ready", async () => {
    const p = policy({ maxSize: 8, maxWaitMs: 0 });
    submit(1, p);
    expect(processes.calls).toHaveLength(1);
    submit(2, p);
    submit(3, p);
    expect(processes.calls).toHaveLength(1);
    const sent = processes.calls[0]!.ready();
    expect(values(sent)).toEqual([1, 2, 3]);
    // Sent: the next item starts a batch of its own.
    submit(4, p);
    expect(processes.calls).toHaveLength(2);
  });

  test("models and revisions never share a batch", async () => {
    const p = policy({ maxSize: 2, maxWaitMs: 0 });
    submit(1, p, { model: "m1", revision: 1n });
    submit(2, p, { model: "m1", revision: 2n });
    submit(3, p, { model: "m2", revision: 1n });
    expect(processes.calls.map((c) => [c.call.model?.modelId, c.call.model?.revision])).toEqual([
      ["m1", 1n],
      ["m1", 2n],
      ["m2", 1n],
    ]);
    expect(processes.calls.map((c) => values(c.ready()))).toEqual([[1], [2], [3]]);
  });

  test("each item gets its own outcome: one item's failure fails it alone", async () => {
    const p = policy({ maxSize: 3 });
    const items = [1, 2, 3].map((n) => submit(n, p));
    processes.calls[0]!.ready();
    processes.calls[0]!.answer([2]);
    await settle();
    expect(items.map((i) => (i.result.error as Error | undefined)?.message)).toEqual([undefined, "item 2 failed", undefined]);
    expect(items[0]!.result.value?.logTail).toEqual(["batch log"]);
  });

  test("a batch call that fails whole fails every item with its error", async () => {
    const items = [1, 2].map((n) => submit(n, policy({ maxSize: 2 })));
    processes.calls[0]!.ready();
    processes.calls[0]!.fail(new ChildFailure("plugin_exited", "plugin exited with code 1"));
    await settle();
    expect(items.map((i) => (i.result.error as Error).message)).toEqual(["plugin exited with code 1", "plugin exited with code 1"]);
  });

  test("progress of one item reaches it alone; progress of the batch reaches every item", async () => {
    const items = [1, 2].map((n) => submit(n, policy({ maxSize: 2 })));
    const call = processes.calls[0]!;
    const [first] = call.ready();
    call.options.onProgress!({ kind: { case: "stringValue", value: "mine" } } as never, [], first!.itemId);
    call.options.onProgress!({ kind: { case: "stringValue", value: "all" } } as never, []);
    expect(items.map((i) => i.progress)).toEqual([["mine", "all"], ["all"]]);
  });

  test("an item cancelled before its batch goes leaves it; a batch left empty is withdrawn", async () => {
    const p = policy({ maxSize: 3, maxWaitMs: 1000 });
    const [a, b] = [submit(1, p), submit(2, p)];
    a.cancel();
    await settle();
    expect((a.result.error as Error).message).toBe("cancelled 1");
    [submit(3, p), submit(4, p)];
    expect(values(processes.calls[0]!.ready())).toEqual([2, 3, 4]);
    // Another batch whose only item leaves, while it waits for a child: it never goes.
    const alone = submit(5, policy({ maxSize: 1 }));
    expect(processes.calls).toHaveLength(2);
    alone.cancel();
    await settle();
    expect(processes.calls[1]!.withdrawn).toBe(true);
    expect(b.result.done).toBe(false);
  });

  test("an item cancelled while its batch runs ends at once and the rest go on; the last one stops the call", async () => {
    const items = [1, 2, 3].map((n) => submit(n, policy({ maxSize: 3 })));
    const call = processes.calls[0]!;
    call.ready();
    items[0]!.cancel();
    await settle();
    expect((items[0]!.result.error as Error).message).toBe("cancelled 1");
    expect(call.options.signal?.aborted).toBe(false);
    items[1]!.cancel();
    items[2]!.cancel();
    await settle();
    // The call was stopped, and the last item ends with how its child ended.
    expect(call.options.signal?.aborted).toBe(true);
    expect((items[1]!.result.error as Error).message).toBe("cancelled 2");
    const last = items[2]!.result.error as ChildFailure;
    expect(last).toBeInstanceOf(ChildFailure);
    expect(last.exit?.signal).toBe("SIGTERM");
  });

  test("an item cancelled while its batch runs does not get the result its child sent anyway", async () => {
    const items = [1, 2].map((n) => submit(n, policy({ maxSize: 2 })));
    processes.calls[0]!.ready();
    items[0]!.cancel();
    processes.calls[0]!.answer();
    await settle();
    expect((items[0]!.result.error as Error).message).toBe("cancelled 1");
    expect(text(items[1]!.result.value?.value)).toBe(4);
  });

  test("at most max_replicas batches of a model run at once; the next goes when one ends", async () => {
    const p = policy({ maxSize: 2, maxWaitMs: 0, maxReplicas: 1 });
    [1, 2, 3, 4, 5].map((n) => submit(n, p));
    expect(processes.calls).toHaveLength(1);
    expect(values(processes.calls[0]!.ready())).toEqual([1, 2]);
    processes.calls[0]!.answer();
    await settle();
    expect(processes.calls).toHaveLength(2);
    expect(values(processes.calls[1]!.ready())).toEqual([3, 4]);
    processes.calls[1]!.answer();
    await settle();
    expect(values(processes.calls[2]!.ready())).toEqual([5]);
  });

  test("a change waiting on the model sends its filling batches at once, and items that come while it waits do not wait", async () => {
    const p = policy({ maxSize: 8, maxWaitMs: 60_000 });
    submit(1, p);
    submit(2, p, { model: "other" });
    expect(processes.calls).toHaveLength(0);
    batches.hurry("m1");
    expect(processes.calls.map((c) => c.call.model?.modelId)).toEqual(["m1"]);
    // It joins the batch that is going, not yet sent.
    submit(3, p, { hurry: true });
    expect(values(processes.calls[0]!.ready())).toEqual([1, 3]);
    submit(4, p, { hurry: true });
    expect(processes.calls).toHaveLength(2);
    expect(values(processes.calls[1]!.ready())).toEqual([4]);
  });

  test("each batch as it goes is reported with its size and each item's wait", async () => {
    const seen: [number, number[]][] = [];
    batches.events.on("batch", (size, waits) => seen.push([size, waits]));
    const p = policy({ maxSize: 2, maxWaitMs: 100 });
    submit(1, p);
    await vi.advanceTimersByTimeAsync(30);
    submit(2, p);
    await vi.advanceTimersByTimeAsync(10);
    processes.calls[0]!.ready();
    expect(seen).toEqual([[2, [0.04, 0.01]]]);
  });
});
