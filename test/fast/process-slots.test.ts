/**
 * The ProcessManager's slot rules in milliseconds: fake children (its `launch` seam) that
 * say hello, answer, fail, exit, stop or vanish when the test says so, on a fake clock.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ChildFailure } from "../../server/process/child.ts";
import {
  type CallOptions,
  type CallOutcome,
  PREWARM_AFTER_MS,
  ProcessManager,
  type ProcessManagerOptions,
} from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { type FakeChild, FakeChildren, fakeManagerOptions, taggedCall, tagOf } from "../helpers/fake-child.ts";
import { settle, type Tracked, track } from "../helpers/fast-engine.ts";

vi.setConfig({ testTimeout: 10_000 });

const A: PluginTarget = { module: "/fake/a.ts", runtime: "node", label: "a.ts" };
const B: PluginTarget = { module: "/fake/b.ts", runtime: "node", label: "b.ts" };
const SIGTERM_TIMEOUT_MS = 5000;
const CHECK_PERIOD_MS = 1000;

let children: FakeChildren;
const managers: ProcessManager[] = [];
/** The most children alive at once, as each was started. */
let most: number;

beforeEach(() => {
  // The clock is fake; setImmediate stays real: the manager's "next turn" is not time.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"] });
  children = new FakeChildren();
  most = 0;
});

afterEach(async () => {
  children.killAll();
  for (const manager of managers.splice(0)) await manager.close();
  vi.useRealTimers();
});

function open(options: Partial<ProcessManagerOptions> = {}): ProcessManager {
  const manager = new ProcessManager(
    fakeManagerOptions(children, { sigtermTimeoutMs: SIGTERM_TIMEOUT_MS, checkChildrenPeriodMs: CHECK_PERIOD_MS, ...options }),
  );
  manager.events.on("spawn", () => (most = Math.max(most, manager.live)));
  managers.push(manager);
  return manager;
}

interface Started extends Tracked<CallOutcome> {
  /** The pid of the child it got, once it got one. */
  readonly pid: number | undefined;
}

function start(manager: ProcessManager, target: PluginTarget, tag: string, options: CallOptions = {}): Started {
  let pid: number | undefined;
  const tracked = track(manager.call(target, taggedCall(tag), { ...options, onStart: (p) => (pid = p) }));
  return Object.defineProperty(tracked, "pid", { get: () => pid }) as Started;
}

/** Says hello for every child that has not, answers `tag`'s call, and lets the manager move on. */
async function answer(tag: string): Promise<FakeChild> {
  children.helloAll();
  await settle();
  const child = children.running(tag);
  child.answer(tag);
  await settle();
  return child;
}

describe("ProcessManager slots", () => {
  test("never more than max_children children; the calls beyond wait in one queue and get a child in arrival order", async () => {
    const m = open({ maxChildren: 2 });
    const calls = ["c1", "c2", "c3", "c4"].map((tag) => start(m, A, tag));
    await settle();
    expect([children.all.length, m.live, m.queued]).toEqual([2, 2, 2]);
    // A call has its child before the plugin has said hello; its call goes once it has.
    expect(calls.map((c) => c.pid)).toEqual([children.all[0]!.pid, children.all[1]!.pid, undefined, undefined]);
    expect(children.all.map((c) => c.calls.length)).toEqual([0, 0]);

    const second = await answer("c2");
    expect(calls[1]!.value).toMatchObject({ warm: false });
    // The child c2 freed serves the first in line, warm.
    expect(children.running("c3")).toBe(second);
    expect(calls[3]!.pid).toBeUndefined();
    const first = await answer("c1");
    expect(children.running("c4")).toBe(first);
    await answer("c3");
    await answer("c4");
    expect(calls.map((c) => c.value?.warm)).toEqual([false, false, true, true]);
    expect([children.all.length, most, m.idle, m.queued]).toEqual([2, 2, 2, 0]);
  });

  test("arrival order holds across modules: an idle child of another module gives up its slot to the first in line", async () => {
    const m = open({ maxChildren: 1 });
    const a1 = start(m, A, "a1");
    const b1 = start(m, B, "b1");
    const a2 = start(m, A, "a2");
    const [childA] = children.all;
    await answer("a1");
    // a2 could run on the idle child of A now; b1 came first: A's child stops to make room.
    expect(childA!.signals).toEqual([{ signal: "SIGTERM", timeoutMs: SIGTERM_TIMEOUT_MS }]);
    expect(children.all.map((c) => c.target.module)).toEqual([A.module, B.module]);
    expect([b1.pid, a2.pid]).toEqual([children.all[1]!.pid, undefined]);
    await answer("b1");
    await answer("a2");
    expect(children.all.map((c) => c.target.module)).toEqual([A.module, B.module, A.module]);
    expect([a1.done, b1.done, a2.done, most]).toEqual([true, true, true, 1]);
  });

  test("a call cancelled while it waits leaves the queue at once with the signal's reason, never gets a child, and the next moves up", async () => {
    const m = open({ maxChildren: 1 });
    start(m, A, "c1");
    const cancel = new AbortController();
    const waiting = start(m, A, "c2", { signal: cancel.signal });
    const next = start(m, A, "c3");
    await settle();
    expect(m.queued).toBe(2);
    const reason = new Error("the caller went away");
    cancel.abort(reason);
    await settle();
    expect(waiting.error).toBe(reason);
    expect(m.queued).toBe(1);
    const child = await answer("c1");
    expect(children.running("c3")).toBe(child);
    await answer("c3");
    expect(next.value).toMatchObject({ warm: true });
    expect(children.all.flatMap((c) => c.calls.map(tagOf))).toEqual(["c1", "c3"]);
    expect(waiting.pid).toBeUndefined();
    // Cancelled before it was made: refused at once, nothing queued.
    const late = start(m, A, "c4", { signal: AbortSignal.abort(reason) });
    await settle();
    expect([late.error, m.queued, children.all.length]).toEqual([reason, 0, 1]);
  });

  test("a call cancelled while it runs: SIGTERM to its child, SIGKILL after sigterm_timeout; it fails cancelled once the child is gone, and only then does its slot serve the next", async () => {
    const m = open({ maxChildren: 1 });
    const cancel = new AbortController();
    const running = start(m, A, "c1", { signal: cancel.signal });
    const next = start(m, A, "c2");
    children.helloAll();
    await settle();
    const child = children.running("c1");
    child.obeysSigterm = false;

    cancel.abort();
    await settle();
    expect(child.signals).toEqual([{ signal: "SIGTERM", timeoutMs: SIGTERM_TIMEOUT_MS }]);
    await vi.advanceTimersByTimeAsync(SIGTERM_TIMEOUT_MS - 1);
    expect([running.done, m.live, children.all.length, next.pid]).toEqual([false, 1, 1, undefined]);

    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(child.signals.map((s) => s.signal)).toEqual(["SIGTERM", "SIGKILL"]);
    expect(running.error).toBeInstanceOf(ChildFailure);
    expect(running.error).toMatchObject({ code: "cancelled", exit: { terminated: true, forced: true, signal: "SIGKILL" } });
    expect(next.pid).toBe(children.all[1]!.pid);

    // A child that obeys SIGTERM is gone at once: no SIGKILL.
    const again = new AbortController();
    const obeyed = start(m, B, "c3", { signal: again.signal });
    await answer("c2");
    children.helloAll();
    await settle();
    const second = children.running("c3");
    again.abort();
    await settle();
    expect(obeyed.error).toMatchObject({ code: "cancelled", exit: { forced: false, signal: "SIGTERM" } });
    expect(second.signals.map((s) => s.signal)).toEqual(["SIGTERM"]);
  });

  test("a call silent past its plugin's heartbeat_timeout is stopped as a cancel is and fails stalled; progress and heartbeats keep it alive", async () => {
    const m = open({ maxChildren: 2 });
    const watched: PluginTarget = { ...A, key: "plugins[0]", heartbeatMs: { predict: 3000 } };
    const running = start(m, watched, "c1");
    const unwatched = start(m, B, "c2");
    children.helloAll();
    await settle();
    const child = children.running("c1");
    await vi.advanceTimersByTimeAsync(2999);
    child.heartbeat();
    await vi.advanceTimersByTimeAsync(2999);
    child.report({ step: 1 });
    await vi.advanceTimersByTimeAsync(2999);
    expect(child.signals).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(child.signals).toEqual([{ signal: "SIGTERM", timeoutMs: SIGTERM_TIMEOUT_MS }]);
    expect(running.error).toBeInstanceOf(ChildFailure);
    expect(running.error).toMatchObject({
      code: "stalled",
      message: "predict of fake.Model neither reported progress nor called ctx.heartbeat() for 3 s (plugins[0].heartbeat_timeout): stopped",
    });
    // A plugin without the key has no such limit.
    await vi.advanceTimersByTimeAsync(60_000);
    expect([unwatched.done, children.running("c2").signals]).toEqual([false, []]);
  });

  test("a child that exits during its call fails that call with a ChildFailure carrying the call's output and the exit; a new child takes its slot", async () => {
    const m = open({ maxChildren: 1 });
    const crashed = start(m, A, "c1");
    const next = start(m, A, "c2");
    const [child] = children.all;
    child!.print("loading the module"); // before the call: not the call's output
    children.helloAll();
    await settle();
    child!.print("step 1");
    child!.print("step 2");
    child!.crash(3);
    await settle();
    expect(crashed.error).toBeInstanceOf(ChildFailure);
    expect(crashed.error).toMatchObject({
      code: "plugin_exited",
      message: expect.stringContaining("plugin a.ts exited with code 3 before answering"),
      logTail: ["step 1", "step 2"],
      exit: { code: 3, terminated: false },
    });
    expect([m.live, children.all.length, next.pid]).toEqual([1, 2, children.all[1]!.pid]);
    await answer("c2");
    expect(next.value).toMatchObject({ warm: false });
  });

  test("a child whose plugin threw serves the next call; one whose module failed to load is never reused: each failure carries its output", async () => {
    const m = open({ maxChildren: 1 });
    const failed = start(m, A, "c1");
    children.helloAll();
    await settle();
    const child = children.running("c1");
    child.print("about to throw");
    child.fail("Error: bad input");
    await settle();
    expect(failed.error).toMatchObject({ code: "plugin_error", message: "Error: bad input", logTail: ["about to throw"], exit: undefined });
    expect(child.signals).toEqual([]);
    const again = start(m, A, "c2");
    await answer("c2");
    expect(again.pid).toBe(child.pid);

    // A call that fails as the child exits: that child goes.
    const exited = start(m, A, "c3");
    await settle();
    children.running("c3").crash(1);
    await settle();
    expect(exited.error).toMatchObject({ code: "plugin_exited" });

    const unloadable = start(m, A, "c4");
    await settle();
    children.all[1]!.print("SyntaxError: Unexpected token");
    children.all[1]!.failToLoad("SyntaxError: Unexpected token");
    await settle();
    expect(unloadable.error).toMatchObject({
      code: "plugin_load_failed",
      message: expect.stringContaining("plugin a.ts failed to load: SyntaxError"),
      logTail: ["SyntaxError: Unexpected token"],
    });
    const next = start(m, A, "c5");
    await answer("c5");
    expect(next.pid).toBe(children.all[2]!.pid);
    expect([children.all.length, m.live]).toEqual([3, 1]);
  });

  test("a child that answered cleanly stays warm for its module only, until max_calls_per_worker; with reuse_workers off none stays", async () => {
    const m = open({ maxChildren: 2, maxCallsPerWorker: 2 });
    start(m, A, "a1");
    const warmChild = await answer("a1");
    expect([m.idle, m.live]).toEqual([1, 1]);
    const other = start(m, B, "b1");
    const second = start(m, A, "a2");
    await settle();
    // B gets a child of its own; A's second call the warm one, its last.
    expect(other.pid).toBe(children.all[1]!.pid);
    expect(second.pid).toBe(warmChild.pid);
    await answer("a2");
    expect(second.value).toMatchObject({ warm: true });
    expect(warmChild.signals.map((s) => s.signal)).toEqual(["SIGTERM"]);
    await answer("b1");

    const fresh = open({ reuseWorkers: false });
    const once = start(fresh, A, "once");
    const child = await answer("once");
    // Gone before its call's outcome is known.
    expect([once.done, child.exit?.terminated, fresh.live, fresh.idle]).toEqual([true, true, 0, 0]);
  });

  test("min_idle_workers: once a module has answered, that many idle children are kept ready for it while slots are free; warmUp() waits for them; drain() stops it", async () => {
    const m = open({ maxChildren: 3, minIdleWorkers: 1 });
    // describe() is a module's first exchange (the server's start): its child stays warm.
    const described = track(m.describe(A));
    children.helloAll();
    await settle();
    expect(described.value).toMatchObject({ runtime: "node" });
    expect([m.live, m.idle]).toEqual([1, 1]);

    const busy = start(m, A, "c1");
    await settle();
    // The idle child took the call: another is started to be the idle one, a moment
    // later (a spawn blocks the event loop: what is under way goes first).
    expect(busy.pid).toBe(children.all[0]!.pid);
    expect([m.live, m.idle]).toEqual([1, 0]);
    await vi.advanceTimersByTimeAsync(PREWARM_AFTER_MS);
    expect([m.live, m.idle, children.all[1]!.waitingForHello]).toEqual([2, 1, true]);
    const warm = track(m.warmUp());
    await settle();
    expect(warm.done).toBe(false);
    children.helloAll();
    await settle();
    expect(warm.done).toBe(true);
    expect(m.counts()).toEqual({ live: 2, idle: 1, starting: 0, busy: 1 });

    await answer("c1");
    expect([m.live, m.idle]).toEqual([2, 2]);
    m.drain();
    start(m, A, "c2");
    start(m, A, "c3");
    await settle();
    expect([children.all.length, m.idle]).toEqual([2, 0]);
  });

  test("idle children beyond min_idle_workers retire after idle_worker_timeout, checked every check_children_period", async () => {
    const m = open({ maxChildren: 3, minIdleWorkers: 1, idleWorkerTimeoutMs: 60_000 });
    start(m, A, "c1");
    start(m, A, "c2");
    const [first, second] = [await answer("c1"), await answer("c2")];
    expect(m.idle).toBe(2);
    await vi.advanceTimersByTimeAsync(60_000 - CHECK_PERIOD_MS);
    expect(m.idle).toBe(2);
    await vi.advanceTimersByTimeAsync(2 * CHECK_PERIOD_MS);
    await settle();
    // The one idle longest goes; min_idle_workers stays.
    expect([first.exit?.terminated, second.exit, m.live, m.idle]).toEqual([true, undefined, 1, 1]);
  });

  test("a warm child found stopped (SIGSTOP) is not given the call: it is killed, and a new child serves the call once its slot is free", async () => {
    const m = open({ maxChildren: 1 });
    start(m, A, "c1");
    const stopped = await answer("c1");
    stopped.suspended = true;
    const next = start(m, A, "c2");
    await settle();
    expect(stopped.signals.map((s) => s.signal)).toEqual(["SIGKILL"]);
    expect(next.pid).toBe(children.all[1]!.pid);
    await answer("c2");
    expect([next.value?.warm, most]).toEqual([false, 1]);
  });

  test("every check_children_period the books are reconciled: a child gone without an exit event fails its call and frees its slot", async () => {
    const m = open({ maxChildren: 1 });
    const lost = start(m, A, "c1");
    const next = start(m, A, "c2");
    children.helloAll();
    await settle();
    children.running("c1").vanish();
    await vi.advanceTimersByTimeAsync(CHECK_PERIOD_MS - 1);
    expect(lost.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(lost.error).toMatchObject({ code: "plugin_exited", message: expect.stringContaining("vanished"), exit: { vanished: true } });
    expect(next.pid).toBe(children.all[1]!.pid);
  });

  test("close() fails the waiting calls and refuses new ones (shutting_down), stops every child, SIGKILL after sigterm_timeout, and resolves once all are gone", async () => {
    const m = open({ maxChildren: 2 });
    const stubborn = start(m, A, "a1");
    const obedient = start(m, B, "b1");
    const waiting = start(m, A, "a2");
    children.helloAll();
    await settle();
    children.running("a1").obeysSigterm = false;

    const closing = track(m.close());
    await settle();
    expect(waiting.error).toMatchObject({ kind: "shutting_down" });
    expect(obedient.error).toMatchObject({ code: "cancelled", exit: { forced: false } });
    expect([stubborn.done, closing.done, m.live]).toEqual([false, false, 1]);
    await expect(m.call(A, taggedCall("late"))).rejects.toMatchObject({ kind: "shutting_down", message: "the server is shutting down" });

    await vi.advanceTimersByTimeAsync(SIGTERM_TIMEOUT_MS);
    await settle();
    expect(stubborn.error).toMatchObject({ code: "cancelled", exit: { forced: true } });
    expect([closing.done, m.live, children.alive.length]).toEqual([true, 0, 0]);
  });
});
