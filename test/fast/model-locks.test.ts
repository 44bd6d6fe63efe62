/** The order of the calls on one model: exclusive changes, shared predicts, arrival order. */
import { describe, expect, test } from "vitest";
import { ModelLocks } from "../../server/engine/model-locks.ts";
import type { Permit } from "../../server/slots.ts";
import { settle, track } from "../helpers/fast-engine.ts";

const EXCLUSIVE = undefined;

describe("ModelLocks", () => {
  test("exclusive calls on one model run one at a time in arrival order; other models are not held up", async () => {
    const locks = new ModelLocks();
    const a = track(locks.acquire("m"));
    const b = track(locks.acquire("m"));
    const other = track(locks.acquire("n"));
    await settle();
    expect([a.done, b.done, other.done]).toEqual([true, false, true]);
    expect(locks.users("m")).toBe(2);
    a.value!.release();
    await settle();
    expect(b.done).toBe(true);
    b.value!.release();
    other.value!.release();
    expect(locks.users("m")).toBe(0);
  });

  test("shared calls run together up to maxShared; the next waits for one to end", async () => {
    const locks = new ModelLocks();
    const calls = Array.from({ length: 4 }, () => track(locks.acquire("m", undefined, 3)));
    await settle();
    expect(calls.map((c) => c.done)).toEqual([true, true, true, false]);
    calls[1]!.value!.release();
    await settle();
    expect(calls[3]!.done).toBe(true);
  });

  test("a change waits for the shared calls admitted before it, and those admitted after it wait for the change", async () => {
    const locks = new ModelLocks();
    const before = [track(locks.acquire("m", undefined, 8)), track(locks.acquire("m", undefined, 8))];
    const change = track(locks.acquire("m", undefined, EXCLUSIVE));
    const after = track(locks.acquire("m", undefined, 8));
    await settle();
    expect(before.map((c) => c.done)).toEqual([true, true]);
    expect([change.done, after.done]).toEqual([false, false]);
    before[0]!.value!.release();
    await settle();
    expect(change.done).toBe(false);
    before[1]!.value!.release();
    await settle();
    expect([change.done, after.done]).toEqual([true, false]);
    change.value!.release();
    await settle();
    expect(after.done).toBe(true);
  });

  test("a waiter whose signal aborts leaves the line with the signal's reason, and those behind it move up", async () => {
    const locks = new ModelLocks();
    const running = track(locks.acquire("m", undefined, 4));
    const controller = new AbortController();
    const change = track(locks.acquire("m", controller.signal));
    const predict = track(locks.acquire("m", undefined, 4));
    await settle();
    expect([running.done, change.done, predict.done]).toEqual([true, false, false]);
    controller.abort(new Error("cancelled while queued"));
    await settle();
    expect((change.error as Error).message).toBe("cancelled while queued");
    // The change is gone: the predict behind it joins the one running.
    expect(predict.done).toBe(true);
    expect(locks.users("m")).toBe(2);
  });

  test("a permit released twice counts once", async () => {
    const locks = new ModelLocks();
    const first: Permit = await locks.acquire("m", undefined, 1);
    const second = track(locks.acquire("m", undefined, 1));
    const third = track(locks.acquire("m", undefined, 1));
    first.release();
    first.release();
    await settle();
    expect([second.done, third.done]).toEqual([true, false]);
  });

  test("an already aborted signal is refused without joining the line", async () => {
    const locks = new ModelLocks();
    const controller = new AbortController();
    controller.abort(new Error("too late"));
    await expect(locks.acquire("m", controller.signal)).rejects.toThrow("too late");
    expect(locks.users("m")).toBe(0);
  });
});
