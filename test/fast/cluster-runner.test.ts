/**
 * A cluster's scheduling rules (ClusterRunner behind the engine, as openEngine composes
 * it), in milliseconds: servers on an in-memory fake of the database's queue and feed,
 * fake plugin calls settled by hand, a fake clock.
 */
import { createRequire, syncBuiltinESMExports } from "node:module";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { type Action, ActionStatus, ActionView, RetryPolicySchema } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import type { WatchStateResponse } from "../../gen/plinth/v1/state_service_pb.ts";
import type { FeedChange } from "../../server/cluster/types.ts";
import type { Engine } from "../../server/engine/engine.ts";
import { ChildFailure } from "../../server/process/child.ts";
import { type FakeCluster, FakeDatabase } from "../helpers/fake-cluster.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { openFastEngine, request, settle, track } from "../helpers/fast-engine.ts";

// The runner waits with node:timers/promises and AbortSignal.timeout, which vitest's fake
// timers leave alone: both go through the fake clock's setTimeout here. The builtin's own
// export is replaced (not vi.mock): test files share their modules (isolate: false), and
// another file may have loaded the runner with the real one already.
const timersPromises = createRequire(import.meta.url)("node:timers/promises") as typeof import("node:timers/promises");
const realSleep = timersPromises.setTimeout;
const fakeSleep = <T>(ms?: number, value?: T) => new Promise<T | undefined>((resolve) => globalThis.setTimeout(() => resolve(value), ms));

vi.setConfig({ testTimeout: 10_000 });

const TYPE = "fake.Model";
/** A model type whose predict is declared concurrent (on the servers that say so). */
const SHARED = "fake.Shared";

interface Server {
  name: string;
  engine: Engine;
  calls: FakePluginCalls;
  cluster: FakeCluster;
}

let db: FakeDatabase;
let servers: Server[];

beforeEach(() => {
  vi.useFakeTimers();
  timersPromises.setTimeout = fakeSleep as typeof realSleep;
  syncBuiltinESMExports();
  vi.spyOn(AbortSignal, "timeout").mockImplementation((ms) => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError")), ms);
    return controller.signal;
  });
  db = new FakeDatabase();
  servers = [];
});

afterEach(async () => {
  db.releaseReads();
  for (const s of servers) {
    s.calls.stopOnAbort = true;
    await s.engine.close();
    db.leave(s.name);
  }
  vi.restoreAllMocks();
  timersPromises.setTimeout = realSleep;
  syncBuiltinESMExports();
  vi.useRealTimers();
});

/**
 * A server of the cluster, serving `types` with `maxChildren` children; `shares`: the types
 * whose predicts it declares concurrent, with their max_replicas (as it announces them).
 */
async function join(
  name: string,
  options: {
    types?: string[];
    maxChildren?: number;
    shares?: Record<string, number>;
    batched?: Record<string, { maxSize: number; maxWaitMs: number }>;
    affinityMs?: number;
  } = {},
): Promise<Server> {
  const types = options.types ?? [TYPE];
  const { cluster, store } = db.join(name, { modelTypes: types, shares: options.shares ?? {} });
  const calls = new FakePluginCalls();
  const engine = await openFastEngine({
    store,
    cluster,
    processes: calls,
    plugins: pluginRegistry(types, [], options.shares, options.batched),
    engine: { max_children: options.maxChildren ?? 4 },
    backend: options.affinityMs === undefined ? {} : { claim_affinity_ms: options.affinityMs },
  });
  const server = { name, engine, calls, cluster };
  servers.push(server);
  return server;
}

const addModel = (s: Server): Promise<Model> => s.engine.addInstance(TYPE, new Uint8Array([1]));
const requestsOf = (op: string, actionId?: string) =>
  db.requests.filter(
    (r) =>
      r.op === op && (actionId === undefined || ("actionId" in r ? r.actionId === actionId : r.op === "release" && r.actionIds.includes(actionId))),
  );

describe("ClusterRunner", () => {
  test("claims only while it has children to spare, counting the calls it is claiming as they are stored, and claims again when a run ends", async () => {
    const a = await join("a", { maxChildren: 2 });
    const models = [await addModel(a), await addModel(a), await addModel(a)];
    // The three calls come while the database is slow: all three are being stored at once.
    const release = db.hold();
    const submitted = models.map((m) => track(a.engine.predict(m.id, request())));
    await settle();
    release();
    await settle();
    const ids = submitted.map((s) => s.value!.id);

    expect(a.calls.actionIds.sort()).toEqual(ids.slice(0, 2).sort());
    expect(db.ownerOf(ids[2]!)).toBeUndefined();
    expect((await a.engine.getAction(ids[2]!, ActionView.BASIC)).status).toBe(ActionStatus.QUEUED);
    // Ticks come and go: nothing more is claimed while both children are busy.
    await vi.advanceTimersByTimeAsync(3000);
    expect(a.calls.actionIds).toHaveLength(2);

    a.calls.of(ids[0]!).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds.slice(2)).toEqual([ids[2]]);
    expect(a.calls.pending).toHaveLength(2);
  });

  test("an action waiting for its next attempt takes none of its server's children: the server claims the next call meanwhile", async () => {
    const a = await join("a", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const retry = create(RetryPolicySchema, { maxAttempts: 2, initialInterval: durationFromMs(60_000) });
    const fit = await a.engine.fit(m1.id, { ...request(), retry });
    await settle();
    const other = await a.engine.predict(m2.id, request());
    await settle();
    expect(a.calls.actionIds).toEqual([fit.id]);
    a.calls.of(fit.id).fail(new ChildFailure("plugin_exited", "the plugin's child exited"));
    await settle();
    expect(a.calls.actionIds).toEqual([fit.id, other.id]);
    expect((await a.engine.getAction(fit.id, ActionView.BASIC)).status).toBe(ActionStatus.QUEUED);
  });

  test("a fit whose server is gone runs its next attempt on another server as the database has it, though that server's feed still shows the attempt before", async () => {
    const a = await join("a", { maxChildren: 1 });
    const b = await join("b", { maxChildren: 1 });
    const model = await addModel(a);
    const retry = create(RetryPolicySchema, { maxAttempts: 2, initialInterval: durationFromMs(1) });
    const fit = await a.engine.fit(model.id, { ...request(), retry });
    await settle();
    expect(a.calls.of(fit.id).call.attempt).toBe(1);
    expect((await b.engine.getAction(fit.id, ActionView.BASIC)).status).toBe(ActionStatus.EXECUTING);
    // a is killed; b claims the next attempt before its feed has read the change.
    const feedBehind = db.holdChanges("b");
    await db.lose("a", "server a is gone");
    await settle();
    await vi.advanceTimersByTimeAsync(1000);
    expect(b.calls.of(fit.id).call.attempt).toBe(2);
    expect(await b.engine.getAction(fit.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.EXECUTING, attempt: 2, server: "b" });
    b.calls.of(fit.id).finish({ instance: new Uint8Array([2]) });
    await settle();
    feedBehind();
    await settle();
    const ended = db.action(fit.id)!;
    expect(ended).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 2, server: "b" });
    expect(ended.attempts.map((x) => [x.attempt, x.error?.code, x.error?.message])).toEqual([[1, "interrupted", "server a is gone"]]);
  });

  test("a draining server claims nothing more: what it runs finishes, its queue goes to the others", async () => {
    const a = await join("a", { maxChildren: 1 });
    const b = await join("b", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const running = await a.engine.predict(m1.id, request());
    await settle();
    const busyB = await b.engine.predict(m2.id, request());
    await settle();
    expect(a.calls.actionIds).toEqual([running.id]);
    expect(b.calls.actionIds).toEqual([busyB.id]);
    // Queued while both are busy; a drains.
    const queued = await b.engine.predict(m1.id, request());
    const drained = track(a.engine.drain(60_000));
    await settle();
    await expect(a.engine.predict(m2.id, request())).rejects.toMatchObject({ kind: "unavailable" });
    a.calls.of(running.id).finish({ value: 1 });
    await settle();
    // a is free but draining: the queued call waits for b.
    expect(drained.done).toBe(true);
    expect(a.calls.actionIds).toEqual([running.id]);
    b.calls.of(busyB.id).finish({ value: 2 });
    await settle();
    expect(b.calls.actionIds).toEqual([busyB.id, queued.id]);
  });

  test("a claim the database answers after the drain began gives its calls back to the queue: the server that drains runs none of them", async () => {
    const a = await join("a", { maxChildren: 1 });
    const b = await join("b", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const busyB = await b.engine.predict(m2.id, request());
    await settle();
    expect(b.calls.actionIds).toEqual([busyB.id]);
    // a claims the new call, but the answer is on its way when a begins to drain.
    const answer = db.holdClaimAnswers();
    const queued = await b.engine.predict(m1.id, request());
    await settle();
    expect(db.requests.some((r) => r.server === "a" && r.op === "claim" && r.claimed?.includes(queued.id))).toBe(true);
    const drained = track(a.engine.drain(60_000));
    await settle();
    answer();
    await settle();
    expect(drained.done).toBe(true);
    expect(a.calls.actionIds).toEqual([]);
    expect((await b.engine.getAction(queued.id, ActionView.BASIC)).status).toBe(ActionStatus.QUEUED);
    // Back in the queue: b runs it once it is free.
    b.calls.of(busyB.id).finish({ value: 1 });
    await settle();
    expect(b.calls.actionIds).toEqual([busyB.id, queued.id]);
  });

  test("a call admitted here just before the drain, its claim still on the way to the database, runs here and the drain waits for it", async () => {
    const a = await join("a", { maxChildren: 1 });
    const model = await addModel(a);
    // The database is slow: the call is admitted (acknowledged to its client) and its claim is being stored as the drain begins.
    const release = db.hold();
    const admitted = track(a.engine.predict(model.id, request()));
    await settle();
    const drained = track(a.engine.drain(60_000));
    await settle();
    release();
    await settle();
    const id = admitted.value!.id;
    expect(a.calls.actionIds).toEqual([id]);
    expect(drained.done).toBe(false);
    a.calls.of(id).finish({ value: 1 });
    await settle();
    expect(drained.done).toBe(true);
    expect((await a.engine.getAction(id, ActionView.BASIC)).status).toBe(ActionStatus.SUCCEEDED);
  });

  test("the next call on a model is claimed by no server while one runs on it, and they run in arrival order", async () => {
    // Server a runs the first call; b has children to spare for the next ones.
    const a = await join("a", { maxChildren: 1 });
    const b = await join("b");
    const model = await addModel(a);
    const other = await addModel(a);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await a.engine.predict(model.id, request([i]))).id);
    const free = await a.engine.predict(other.id, request());
    await settle();
    const calls = () => [...a.calls.calls, ...b.calls.calls].sort((x, y) => x.arrival - y.arrival);
    const onModel = () => calls().filter((c) => c.modelId === model.id);
    expect(onModel().map((c) => c.actionId)).toEqual([ids[0]]);
    // Another model's call runs meanwhile.
    expect(calls().map((c) => c.actionId)).toContain(free.id);
    await vi.advanceTimersByTimeAsync(2000);
    expect(onModel()).toHaveLength(1);

    for (let i = 0; i < 2; i++) {
      onModel()[i]!.finish({ value: i });
      await settle();
      expect(onModel().map((c) => c.actionId)).toEqual(ids.slice(0, i + 2));
    }
  });

  test("a queued call past its timeout ends FAILED deadline_exceeded then, without waiting for a child", async () => {
    const a = await join("a", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const busy = await a.engine.predict(m1.id, request());
    const late = await a.engine.predict(m2.id, request([], 3000));
    await settle();
    expect(db.ownerOf(late.id)).toBeUndefined();

    await vi.advanceTimersByTimeAsync(2999);
    expect(db.action(late.id)?.status).toBe(ActionStatus.QUEUED);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    const ended = { status: ActionStatus.FAILED, error: { code: "deadline_exceeded" }, cancel: { by: "timeout", phase: ActionStatus.QUEUED } };
    expect(db.action(late.id)).toMatchObject(ended);
    expect(await a.engine.getAction(late.id, ActionView.BASIC)).toMatchObject(ended);
    expect(db.ownerOf(late.id)).toBeNull();

    a.calls.of(busy.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id]);
  });

  test("a claim this server holds but does not run at two looks, 5 s apart, goes back to the queue and runs", async () => {
    const a = await join("a", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const busy = await a.engine.predict(m1.id, request());
    const next = await a.engine.predict(m2.id, request());
    await settle();
    db.loseNextClaimAnswer();
    a.calls.of(busy.id).finish({ value: 1 });
    await settle();
    // The database gave it to this server; the server never heard.
    expect(db.ownerOf(next.id)).toBe("a");
    expect(a.calls.actionIds).toEqual([busy.id]);

    await vi.advanceTimersByTimeAsync(5000);
    expect(requestsOf("release")).toEqual([]);
    expect(db.ownerOf(next.id)).toBe("a");

    await vi.advanceTimersByTimeAsync(5000);
    await settle();
    expect(requestsOf("release", next.id)).toHaveLength(1);
    expect(a.calls.actionIds).toEqual([busy.id, next.id]);
  });

  test("cancelling a queued call ends it CANCELLED on this server at once; it never runs", async () => {
    const a = await join("a", { maxChildren: 1 });
    const [m1, m2] = [await addModel(a), await addModel(a)];
    const busy = await a.engine.predict(m1.id, request());
    const queued = await a.engine.predict(m2.id, request());
    await settle();

    const cancelled = track(a.engine.cancelAction(queued.id));
    await settle();
    expect(cancelled.done).toBe(true);
    const ended = { status: ActionStatus.CANCELLED, error: { code: "cancelled" }, cancel: { by: "CancelAction", phase: ActionStatus.QUEUED } };
    expect(cancelled.value).toMatchObject(ended);
    expect(db.action(queued.id)).toMatchObject(ended);
    expect(db.ownerOf(queued.id)).toBeNull();

    a.calls.of(busy.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id]);
  });

  test("cancelling a call another server runs asks that server, again each second, until the feed shows it ended", async () => {
    const a = await join("a", { types: [] });
    const b = await join("b");
    const model = await addModel(b);
    const action = await a.engine.predict(model.id, request());
    await settle();
    expect(b.calls.actionIds).toEqual([action.id]);
    const call = b.calls.of(action.id);
    // The first request is lost on its way.
    db.dropCancels(1);

    const cancelled = track(a.engine.cancelAction(action.id));
    await settle();
    expect(requestsOf("requestCancel", action.id)).toHaveLength(1);
    expect(call.signal?.aborted).toBe(false);
    expect(cancelled.done).toBe(false);

    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    expect(requestsOf("requestCancel", action.id)).toHaveLength(2);
    expect(call.signal?.aborted).toBe(true);
    expect(cancelled.done).toBe(true);
    const ended = { status: ActionStatus.CANCELLED, cancel: { by: "CancelAction", phase: ActionStatus.EXECUTING } };
    expect(cancelled.value).toMatchObject(ended);
    expect(db.action(action.id)).toMatchObject(ended);
  });

  test("an end the database refused is stored again every second until it takes it, and its claim is not given back meanwhile", async () => {
    const a = await join("a");
    const model = await addModel(a);
    const action = await a.engine.predict(model.id, request());
    await settle();
    let attempts = 0;
    db.refuse(
      "write",
      (x) => {
        const ends = "status" in x && x.id === action.id && x.status >= ActionStatus.SUCCEEDED;
        if (ends) attempts++;
        return ends;
      },
      11,
    );
    a.calls.of(action.id).finish({ value: 1 });
    await settle();
    expect(attempts).toBe(1);
    // The server says what happened; the others see it running until the database takes its end.
    expect(await a.engine.getAction(action.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.FAILED, error: { code: "store_failed" } });
    expect(db.action(action.id)?.status).toBe(ActionStatus.EXECUTING);

    await vi.advanceTimersByTimeAsync(999);
    expect(attempts).toBe(1);
    for (let second = 1; second <= 10; second++) {
      await vi.advanceTimersByTimeAsync(second === 1 ? 1 : 1000);
      expect(attempts).toBe(1 + second);
    }
    expect(db.action(action.id)?.status).toBe(ActionStatus.EXECUTING);
    expect(requestsOf("release")).toEqual([]);

    // The twelfth write, at 11 s, is taken.
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    expect(db.action(action.id)).toMatchObject({ status: ActionStatus.FAILED, error: { code: "store_failed" } });
    expect(db.ownerOf(action.id)).toBeNull();
    expect(requestsOf("release")).toEqual([]);
  });

  test("a watcher sees the feed's changes, this server's and the others', with the database's revisions in rising order", async () => {
    const a = await join("a");
    const b = await join("b");
    const controller = new AbortController();
    const seen: WatchStateResponse[] = [];
    const watching = (async () => {
      for await (const message of a.engine.watchState({ from: 0n, filter: { modelIds: [], actionIds: [], kinds: [] } }, controller.signal))
        seen.push(message);
    })();
    await settle();
    expect(seen[0]?.event.case).toBe("snapshot");
    const start = db.revision;

    // Server a hears nothing while b makes a model and runs a call on it (several changes of one action).
    const hear = db.deafen("a");
    const theirs = await addModel(b);
    const action = await b.engine.predict(theirs.id, request());
    await settle();
    b.calls.of(action.id).finish({ value: 1 });
    await b.engine.waitAction(action.id, ActionView.BASIC);
    await settle();
    hear();
    await settle();
    const ours = await addModel(a);
    await settle();
    controller.abort();
    await watching;

    const changes = seen.slice(1);
    const revisions = changes.map((m) => m.revision);
    expect(revisions).toEqual([...revisions].sort((x, y) => (x < y ? -1 : 1)));
    expect(new Set(revisions).size).toBe(revisions.length);
    // Each is the database's change under that revision.
    const committed = new Map(db.history.filter((c) => c.revision > start).map((c) => [c.revision, c]));
    const idOf = (c: FeedChange | undefined) => (c?.kind === "action" ? c.action.id : c?.kind === "model" ? c.model.id : c?.modelId);
    for (const message of changes) {
      const value = message.event.value as Model | Action;
      expect({ revision: message.revision, id: value.id }).toEqual({ revision: message.revision, id: idOf(committed.get(message.revision)) });
    }
    const ids = changes.map((m) => (m.event.value as Model | Action).id);
    expect(ids).toEqual([theirs.id, action.id, ours.id]);
    expect(changes[1]?.event.value).toMatchObject({ id: action.id, status: ActionStatus.SUCCEEDED });
  });
});

describe("ClusterRunner: one model's concurrent predicts on several servers", () => {
  const everyCall = () => [...servers.flatMap((s) => s.calls.calls)].sort((x, y) => x.arrival - y.arrival);
  const callOf = (id: string) => everyCall().find((c) => c.actionId === id);
  const running = (modelId: string) => everyCall().filter((c) => c.modelId === modelId && !c.settled);

  test("run at once on both servers; a fit waits for every one admitted before it, and the predicts after it wait for it and run on its revision", async () => {
    const a = await join("a", { types: [SHARED], maxChildren: 2, shares: { [SHARED]: 2 } });
    const b = await join("b", { types: [SHARED], maxChildren: 2, shares: { [SHARED]: 2 } });
    const model = await a.engine.addInstance(SHARED, new Uint8Array([1]));
    const before: string[] = [];
    for (let i = 0; i < 3; i++) before.push((await a.engine.predict(model.id, request([i]))).id);
    await settle();
    // Server a runs two (its children), b the third: three calls on one model at once.
    expect(a.calls.actionIds).toEqual(before.slice(0, 2));
    expect(b.calls.actionIds).toEqual([before[2]]);

    const fit = await b.engine.fit(model.id, request());
    const after = await b.engine.predict(model.id, request([3]));
    await settle();
    await vi.advanceTimersByTimeAsync(3000);
    // Server b has a child to spare: neither the fit nor the predict behind it takes it.
    expect(callOf(fit.id)).toBeUndefined();
    expect(callOf(after.id)).toBeUndefined();
    expect(db.action(fit.id)?.status).toBe(ActionStatus.QUEUED);

    for (const id of before.slice(0, 2)) a.calls.of(id).finish({ value: 1 });
    await settle();
    expect(callOf(fit.id)).toBeUndefined();
    b.calls.of(before[2]!).finish({ value: 1 });
    await settle();
    expect(running(model.id).map((c) => c.actionId)).toEqual([fit.id]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(callOf(after.id)).toBeUndefined();

    callOf(fit.id)!.finish({ instance: new Uint8Array([2]) });
    await settle();
    expect(callOf(after.id)?.call.model?.revision).toBe(2n);
    callOf(after.id)!.finish({ value: 2 });
    await settle();
    const revisions = [...before, after.id].map((id) => db.action(id)?.modelRevision);
    expect(revisions).toEqual([1n, 1n, 1n, 2n]);
  });

  test("an update waits for the predicts admitted before it, and those sent after it wait for it and run on its revision", async () => {
    const a = await join("a", { types: [SHARED], maxChildren: 2, shares: { [SHARED]: 2 } });
    const b = await join("b", { types: [SHARED], maxChildren: 2, shares: { [SHARED]: 2 } });
    const model = await a.engine.addInstance(SHARED, new Uint8Array([1]));
    const before = [(await a.engine.predict(model.id, request())).id, (await b.engine.predict(model.id, request())).id];
    await settle();
    expect(running(model.id)).toHaveLength(2);

    const updated = track(b.engine.updateInstance(model.id, new Uint8Array([2])));
    await settle();
    // Both servers have a child to spare; the predict waits behind the update all the same.
    const after = await a.engine.predict(model.id, request());
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(callOf(after.id)).toBeUndefined();
    a.calls.of(before[0]!).finish({ value: 1 });
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(updated.done).toBe(false);
    expect(callOf(after.id)).toBeUndefined();

    b.calls.of(before[1]!).finish({ value: 1 });
    await settle();
    await vi.advanceTimersByTimeAsync(1000);
    expect(updated.value?.revision).toBe(2n);
    expect(callOf(after.id)?.call.model?.revision).toBe(2n);
  });

  test("a model with an update waiting for its turn is not deleted", async () => {
    const a = await join("a");
    const model = await addModel(a);
    await db.queueUpdate("b", "u-1", model.id);
    await expect(a.engine.deleteModel(model.id)).rejects.toThrow(/has 1 queued or running action\(s\)/);
    db.dropUpdate("u-1");
    await a.engine.deleteModel(model.id);
  });

  test("each server runs at most its max_replicas of them on one model; the others take the rest", async () => {
    const a = await join("a", { types: [SHARED], maxChildren: 4, shares: { [SHARED]: 2 } });
    const b = await join("b", { types: [SHARED], maxChildren: 4, shares: { [SHARED]: 1 } });
    const model = await a.engine.addInstance(SHARED, new Uint8Array([1]));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await a.engine.predict(model.id, request([i]))).id);
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(a.calls.actionIds).toEqual(ids.slice(0, 2));
    expect(b.calls.actionIds).toEqual([ids[2]]);
    expect(db.ownerOf(ids[3]!)).toBeUndefined();

    b.calls.of(ids[2]!).finish({ value: 1 });
    await settle();
    expect(b.calls.actionIds).toEqual([ids[2], ids[3]]);
  });

  test("while one server declaring the model type runs its predict one call at a time, they run one at a time across the cluster", async () => {
    // A rolling upgrade: server b still runs the plugin's version whose predict is not concurrent.
    const a = await join("a", { types: [SHARED], maxChildren: 2, shares: { [SHARED]: 2 } });
    const b = await join("b", { types: [SHARED], maxChildren: 2 });
    const model = await a.engine.addInstance(SHARED, new Uint8Array([1]));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await a.engine.predict(model.id, request([i]))).id);
    for (let i = 0; i < 3; i++) {
      await settle();
      await vi.advanceTimersByTimeAsync(2000);
      expect(running(model.id).map((c) => c.actionId)).toEqual([ids[i]]);
      running(model.id)[0]!.finish({ value: i });
    }
    expect(b.calls.actionIds.length + a.calls.actionIds.length).toBe(3);
  });

  test("a shared predict queued before a server that runs its type one call at a time joined runs there alone", async () => {
    const a = await join("a", { types: [SHARED], maxChildren: 1, shares: { [SHARED]: 4 } });
    const model = await a.engine.addInstance(SHARED, new Uint8Array([1]));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await a.engine.predict(model.id, request([i]))).id);
    await settle();
    expect(a.calls.actionIds).toEqual([ids[0]]);
    // Queued shared; the newcomer, with children to spare, takes neither while one runs on a.
    const b = await join("b", { types: [SHARED], maxChildren: 2 });
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(b.calls.actionIds).toEqual([]);

    a.calls.of(ids[0]!).finish({ value: 0 });
    for (let i = 1; i < 3; i++) {
      await settle();
      await vi.advanceTimersByTimeAsync(2000);
      expect(running(model.id).map((c) => c.actionId)).toEqual([ids[i]]);
      running(model.id)[0]!.finish({ value: i });
    }
    expect(b.calls.actionIds.length).toBeGreaterThan(0);
  });

  test("a server claims the calls on models its children hold before older ones, until those have waited claim_affinity_ms", async () => {
    const a = await join("a", { maxChildren: 1, affinityMs: 500 });
    const [busyModel, cold, warm] = [await addModel(a), await addModel(a), await addModel(a)];
    a.calls.holding.add(warm.id);
    const busy = await a.engine.predict(busyModel.id, request());
    const first = await a.engine.predict(cold.id, request());
    const second = await a.engine.predict(warm.id, request());
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id]);

    // Both young: the held model's call goes first.
    a.calls.of(busy.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id, second.id]);
    a.calls.of(second.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id, second.id, first.id]);

    // Past 500 ms, the older call goes first whatever the children hold.
    const busyAgain = a.calls.of(first.id);
    const older = await a.engine.predict(cold.id, request());
    await vi.advanceTimersByTimeAsync(300);
    const newer = await a.engine.predict(warm.id, request());
    await vi.advanceTimersByTimeAsync(200);
    busyAgain.finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds.slice(3)).toEqual([older.id]);
    a.calls.of(older.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds.slice(3)).toEqual([older.id, newer.id]);
  });

  test("a batched model type's predicts are claimed as many as a batch holds per free child, and a change queued elsewhere sends the filling batch", async () => {
    const BATCHED = "fake.Batched";
    // As the server announces a batched type: max_replicas (1) × maxSize items on one model.
    const options = { types: [BATCHED], maxChildren: 1, shares: { [BATCHED]: 4 }, batched: { [BATCHED]: { maxSize: 4, maxWaitMs: 600_000 } } };
    const a = await join("a", options);
    const b = await join("b", { types: [TYPE] });
    const model = await a.engine.addInstance(BATCHED, new Uint8Array([1]));
    // Sent through b, which does not serve the type: a claims them, four for its one child.
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await b.engine.predict(model.id, request([i]))).id);
    await settle();
    await vi.advanceTimersByTimeAsync(1500);
    expect(a.calls.calls).toHaveLength(1);
    expect(a.calls.calls[0]!.items?.map((item) => item.actionId)).toEqual(ids.slice(0, 4));
    a.calls.calls[0]!.finish({ value: 1 });
    await settle();
    await vi.advanceTimersByTimeAsync(1500);
    // The fifth waits in a batch of its own, which would wait ten minutes for more, until a fit is queued on b.
    expect(db.ownerOf(ids[4]!)).toBe("a");
    expect(a.calls.calls).toHaveLength(1);
    const fit = track(b.engine.fit(model.id, request()));
    await settle();
    await vi.advanceTimersByTimeAsync(1500);
    expect(a.calls.calls).toHaveLength(2);
    expect(a.calls.calls[1]!.items?.map((item) => item.actionId)).toEqual([ids[4]]);
    expect(fit.done || !fit.error).toBe(true);
  });

  test("a server claims the highest priority first, then callers in turns, each caller's oldest first", async () => {
    const a = await join("a", { maxChildren: 1, affinityMs: 0 });
    const models = await Promise.all(Array.from({ length: 7 }, () => addModel(a)));
    const as = (name: string) => ({ name, roles: new Set(["run" as const]) });
    const at = (priority: number) => ({ ...request(), priority });
    const busy = await a.engine.predict(models[0]!.id, request());
    const x = [];
    for (const m of models.slice(1, 4)) x.push(await a.engine.predict(m.id, at(5), as("x")));
    const y = await a.engine.predict(models[4]!.id, at(5), as("y"));
    const urgent = await a.engine.predict(models[5]!.id, at(1), as("y"));
    const plain = await a.engine.predict(models[6]!.id, request(), as("x"));
    await settle();
    for (let i = 0; i < 6; i++) {
      a.calls.pending[0]!.finish({ value: i });
      await settle();
    }
    expect(a.calls.actionIds).toEqual([busy.id, urgent.id, plain.id, x[0]!.id, y.id, x[1]!.id, x[2]!.id]);
  });

  test("claim_affinity_ms 0 claims in queue order", async () => {
    const a = await join("a", { maxChildren: 1, affinityMs: 0 });
    const [busyModel, cold, warm] = [await addModel(a), await addModel(a), await addModel(a)];
    a.calls.holding.add(warm.id);
    const busy = await a.engine.predict(busyModel.id, request());
    const first = await a.engine.predict(cold.id, request());
    await a.engine.predict(warm.id, request());
    await settle();
    a.calls.of(busy.id).finish({ value: 1 });
    await settle();
    expect(a.calls.actionIds).toEqual([busy.id, first.id]);
  });
});
