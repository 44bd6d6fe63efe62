/**
 * The ProcessManager's side of a batch call, with fake children: the items are taken once
 * the child is ready, a batch with none left is withdrawn and its child kept, an item
 * cancelled mid-call is stopped in the child (CancelItems) without stopping the child,
 * and each item's outcome comes back on its own.
 */
import { describe, expect, test } from "vitest";
import { CallKind } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type BatchItem, type CallOutcome, CallWithdrawn, type PluginCall } from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { useFakeManager, workerJson } from "../helpers/fake-child.ts";
import { settle, track } from "../helpers/fast-engine.ts";

const A: PluginTarget = { module: "/fake/a.ts", runtime: "node", label: "a.ts", key: "plugins[0]", residentMb: 1 };
const model = { modelId: "m", revision: 1n, size: 4, bytes: () => Promise.resolve(new Uint8Array(4)) };

const fake = useFakeManager({ maxChildren: 1 });

function item(itemId: string): BatchItem & { cancel(): void } {
  const controller = new AbortController();
  return { itemId, actionId: `a${itemId}`, args: [workerJson(itemId)], kwargs: {}, signal: controller.signal, cancel: () => controller.abort() };
}

function batchCall(take: () => BatchItem[]): PluginCall {
  return { kind: CallKind.PREDICT, target: "fake.Batched", model, args: [], kwargs: {}, batch: take };
}

describe("ProcessManager batch calls", () => {
  test("the items go once the child is ready, and each comes back with its own outcome", async () => {
    const items: BatchItem[] = [item("1")];
    const progress: [unknown, string | undefined][] = [];
    const call = track(
      fake.manager.call(
        A,
        batchCall(() => items),
        { onProgress: (state, _tail, itemId) => progress.push([state?.kind.value, itemId]) },
      ),
    );
    await settle();
    // It joined while the child was starting.
    items.push(item("2"));
    fake.children.helloAll();
    await settle();
    const child = fake.children.alive[0]!;
    expect(child.current?.items?.map((i) => i.itemId)).toEqual(["1", "2"]);
    expect(child.current?.args).toEqual([]);
    child.report("half", "2");
    child.answerItems({ "1": 10, "2": new Error("bad item") });
    await settle();
    const outcome = call.value as CallOutcome;
    expect(progress).toEqual([["half", "2"]]);
    expect(outcome.items?.get("1")).toEqual({ value: workerJson(10) });
    expect((outcome.items!.get("2") as { failure: Error }).failure.message).toBe("Error: bad item");
    // An item's failure is not the child's: it stays for the next call.
    expect(fake.manager.idle).toBe(1);
  });

  test("a batch with no items left when its child is ready is withdrawn, and the child kept", async () => {
    const call = track(
      fake.manager.call(
        A,
        batchCall(() => []),
      ),
    );
    fake.children.helloAll();
    await settle();
    expect(call.error).toBeInstanceOf(CallWithdrawn);
    expect(fake.children.alive[0]!.calls).toHaveLength(0);
    expect(fake.manager.idle).toBe(1);
  });

  test("a batch whose signal aborts before it is sent is withdrawn without a signal to its child", async () => {
    const controller = new AbortController();
    const call = track(
      fake.manager.call(
        A,
        batchCall(() => [item("1")]),
        { signal: controller.signal },
      ),
    );
    await settle();
    controller.abort();
    fake.children.helloAll();
    await settle();
    expect(call.error).toBeInstanceOf(CallWithdrawn);
    expect(fake.children.alive[0]!.signals).toEqual([]);
    expect(fake.manager.idle).toBe(1);
  });

  test("an item cancelled while its batch runs is stopped in the child; the call and its child go on", async () => {
    const items = [item("1"), item("2")];
    const call = track(
      fake.manager.call(
        A,
        batchCall(() => items),
      ),
    );
    fake.children.helloAll();
    await settle();
    const child = fake.children.alive[0]!;
    items[0]!.cancel();
    expect(child.cancelledItems).toEqual([{ callId: child.current!.callId, itemIds: ["1"] }]);
    expect(child.signals).toEqual([]);
    child.answerItems({ "1": 1, "2": 2 });
    await settle();
    expect(call.value?.items?.size).toBe(2);
    // Once the call has ended, a late cancel sends nothing.
    items[1]!.cancel();
    expect(child.cancelledItems).toHaveLength(1);
  });

  test("a batch call stopped by its signal once sent terminates its child, as any call", async () => {
    const controller = new AbortController();
    const call = track(
      fake.manager.call(
        A,
        batchCall(() => [item("1")]),
        { signal: controller.signal },
      ),
    );
    fake.children.helloAll();
    await settle();
    controller.abort();
    await settle();
    expect(fake.children.all[0]!.signals.map((s) => s.signal)).toEqual(["SIGTERM"]);
    expect((call.error as Error).message).toMatch(/cancelled/);
  });
});
