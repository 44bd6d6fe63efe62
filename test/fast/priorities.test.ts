/**
 * Priorities and fairness, in milliseconds: the process manager's queue with fake
 * children (the highest priority first, callers taking turns within one, each caller's
 * oldest first), a batch of predicts waiting as its highest-priority item, and the engine
 * over fake plugin calls (a model's own line kept whatever the priorities, the action's
 * priority checked, shown, passed on and filtered on).
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import type { Engine } from "../../server/engine/engine.ts";
import { PredictBatches } from "../../server/engine/predict-batches.ts";
import type { QueueOrder } from "../../server/process/fair-queue.ts";
import type { CallOptions } from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { taggedCall, tagOf, useFakeManager, workerJson } from "../helpers/fake-child.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { memoryStore, openFastEngine, request, settle, track } from "../helpers/fast-engine.ts";

vi.setConfig({ testTimeout: 10_000 });

const A: PluginTarget = { module: "/fake/a.ts", runtime: "node", label: "a.ts" };
const B: PluginTarget = { module: "/fake/b.ts", runtime: "node", label: "b.ts" };

describe("the process manager's queue", () => {
  const fake = useFakeManager({ maxChildren: 1 });

  const start = (tag: string, order?: QueueOrder, target = A, options: CallOptions = {}) =>
    track(fake.manager.call(target, taggedCall(tag), { ...options, order }));

  /** Answers the running call, over and over: the tags in the order they got the child. */
  async function drain(n: number): Promise<string[]> {
    const order: string[] = [];
    for (let i = 0; i < n; i++) {
      fake.children.helloAll();
      await settle();
      const child = fake.children.alive.find((c) => c.current)!;
      order.push(tagOf(child.current!));
      child.answer(null);
      await settle();
    }
    return order;
  }

  test("with max_children 1 and 100 priority-5 calls queued, a priority-1 call runs next, then a priority-3 one; the 5s oldest first", async () => {
    const running = start("running");
    const low = Array.from({ length: 100 }, (_, i) => start(`low${i}`, { priority: 5, caller: "batch" }));
    const top = start("top", { priority: 1, caller: "person" });
    const mid = start("mid", undefined, B);
    await settle();
    expect(fake.manager.queued).toBe(102);
    const order = await drain(103);
    expect(order.slice(0, 3)).toEqual(["running", "top", "mid"]);
    expect(order.slice(3)).toEqual(low.map((_, i) => `low${i}`));
    expect([running.done, top.done, mid.done, low.every((c) => c.done)]).toEqual([true, true, true, true]);
  });

  test("within a priority callers take turns, each caller's oldest first; a caller that comes late is not put behind the others' backlog", async () => {
    start("running");
    for (const n of [1, 2, 3, 4]) start(`x${n}`, { priority: 2, caller: "x" });
    for (const n of [1, 2]) start(`y${n}`, { priority: 2, caller: "y" });
    expect(await drain(4)).toEqual(["running", "x1", "y1", "x2"]);
    // z comes now: it takes its turn after the one being served, before x's and y's next.
    start("z1", { priority: 2, caller: "z" });
    expect(await drain(4)).toEqual(["y2", "z1", "x3", "x4"]);
  });

  test("a call cancelled while it waits leaves its place; the others keep their order", async () => {
    start("running");
    const cancel = new AbortController();
    const gone = start("gone", { priority: 1, caller: "x" }, A, { signal: cancel.signal });
    start("five", { priority: 5, caller: "x" });
    start("one", { priority: 1, caller: "y" });
    await settle();
    cancel.abort(new Error("went away"));
    await settle();
    expect(gone.error).toMatchObject({ message: "went away" });
    expect(await drain(3)).toEqual(["running", "one", "five"]);
  });

  test("a batch of predicts waits for its child as its highest-priority item", async () => {
    const batches = new PredictBatches(fake.manager);
    const model = { modelId: "m", revision: 1n, size: 4, bytes: () => Promise.resolve(new Uint8Array(4)) };
    const to = { target: A, modelType: "fake.Batched", model, policy: { maxSize: 8, maxWaitMs: 0, maxReplicas: 1 } };
    start("running");
    start("three", { priority: 3, caller: "x" });
    const item = (actionId: string, priority: number) =>
      track(
        batches.submit(to, {
          actionId,
          args: [workerJson(actionId)],
          kwargs: {},
          signal: new AbortController().signal,
          order: { priority, caller: "y" },
          onStart: () => {},
          onProgress: () => {},
        }),
      );
    const items = [item("p4", 4), item("p2", 2)];
    fake.children.helloAll();
    await settle();
    fake.children.alive[0]!.answer(null);
    await settle();
    // The batch (a priority-2 item in it, beside a priority-4 one) goes before the priority-3 call that came first.
    const child = fake.children.alive.find((c) => c.current)!;
    expect(child.current!.items?.map((i) => i.actionId)).toEqual(["p4", "p2"]);
    child.answerItems({ 1: 1, 2: 2 });
    await settle();
    expect(items.map((i) => i.done)).toEqual([true, true]);
    expect(await drain(1)).toEqual(["three"]);
  });
});

describe("the engine", () => {
  const TYPE = "fake.Model";
  let calls: FakePluginCalls;
  let engine: Engine;

  beforeEach(async () => {
    vi.useFakeTimers();
    calls = new FakePluginCalls();
    engine = await openFastEngine({ store: memoryStore(), processes: calls, plugins: pluginRegistry([TYPE]) });
  });

  afterEach(async () => {
    await engine.close();
    vi.useRealTimers();
  });

  const at = (priority: number) => ({ ...request(), priority });

  test("a priority-1 predict behind a priority-5 fit on the same model waits for the fit, which waits for a child at priority 1 meanwhile", async () => {
    const model = await engine.addInstance(TYPE, new Uint8Array([1]));
    const fit = await engine.fit(model.id, at(5), { name: "batch", roles: new Set(["run"]) });
    await settle();
    // The order the call waits for a child in: its priority and its caller.
    const order = (id: string) => {
      const { order } = calls.of(id);
      return typeof order === "function" ? order() : order;
    };
    expect(order(fit.id)).toEqual({ priority: 5, caller: "batch" });
    const predict = await engine.predict(model.id, at(1), { name: "person", roles: new Set(["run"]) });
    await settle();
    expect(calls.actionIds).toEqual([fit.id]);
    expect(order(fit.id)).toEqual({ priority: 1, caller: "batch" });
    calls.of(fit.id).finish({ instance: new Uint8Array([2]) });
    await settle();
    expect(calls.actionIds).toEqual([fit.id, predict.id]);
    expect(order(predict.id)).toEqual({ priority: 1, caller: "person" });
    calls.of(predict.id).finish({ value: 1 });
    expect((await engine.waitAction(predict.id, ActionView.BASIC)).status).toBe(ActionStatus.SUCCEEDED);
  });

  test("the action shows its priority (3 unless set); ListActions filters on it; out of range is INVALID_ARGUMENT naming the field", async () => {
    const model = await engine.addInstance(TYPE, new Uint8Array([1]));
    const plain = await engine.predict(model.id, request());
    const urgent = await engine.predict(model.id, at(1));
    expect([plain.priority, urgent.priority]).toEqual([3, 1]);
    // Queued behind plain on its model, but first in priority.
    expect((await engine.getAction(urgent.id, ActionView.BASIC)).queuePosition).toBe(1);
    const listed = (priority: number) =>
      engine.listActions({ modelId: "", statuses: [], pageSize: 0, pageToken: "", view: ActionView.BASIC, priority });
    expect((await listed(1)).actions.map((a) => a.id)).toEqual([urgent.id]);
    expect((await listed(3)).actions.map((a) => a.id)).toEqual([plain.id]);
    expect((await listed(0)).actions).toHaveLength(2);
    for (const bad of [6, 1.5]) {
      await expect(engine.predict(model.id, at(bad))).rejects.toMatchObject({
        kind: "invalid_argument",
        message: expect.stringMatching(/^priority: must be between 1 \(highest\) and 5/),
      });
    }
    await expect(listed(9)).rejects.toMatchObject({ message: expect.stringContaining("priority: must be between 1") });
    for (const a of [plain, urgent]) {
      await settle();
      calls.of(a.id).finish({ value: 1 });
    }
  });
});
