/**
 * One server's scheduling rules (LocalRunner behind the engine, as openEngine composes
 * it), in milliseconds: the memory store, fake plugin calls settled by hand, a fake clock.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import type { Engine } from "../../server/engine/engine.ts";
import type { StateEvent } from "../../server/engine/state-publisher.ts";
import { ChildFailure } from "../../server/process/child.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { openFastEngine, request, settle, track } from "../helpers/fast-engine.ts";
import { TestStore } from "../helpers/test-store.ts";

vi.setConfig({ testTimeout: 10_000 });

const TYPE = "fake.Model";
const none = request();

let store: TestStore;
let calls: FakePluginCalls;
let engine: Engine;

beforeEach(async () => {
  vi.useFakeTimers();
  store = new TestStore();
  calls = new FakePluginCalls();
  engine = await openFastEngine({ store, processes: calls, plugins: pluginRegistry([TYPE]) });
});

afterEach(async () => {
  calls.stopOnAbort = true;
  await engine.close();
  vi.useRealTimers();
});

const addModel = (): Promise<Model> => engine.addInstance(TYPE, new Uint8Array([1]));
const view = (id: string) => engine.getAction(id, ActionView.BASIC);

describe("LocalRunner", () => {
  test("calls on one model run one at a time in arrival order; calls on different models run at once", async () => {
    const [m1, m2] = [await addModel(), await addModel()];
    const fit = await engine.fit(m1.id, none);
    const first = await engine.predict(m1.id, request([1]));
    const second = await engine.predict(m1.id, request([2]));
    const other = await engine.predict(m2.id, none);
    await settle();
    expect(calls.actionIds.sort()).toEqual([fit.id, other.id].sort());
    expect((await view(first.id)).status).toBe(ActionStatus.QUEUED);

    calls.of(fit.id).finish({ instance: new Uint8Array([2]) });
    await settle();
    expect(calls.actionIds.slice(2)).toEqual([first.id]);
    // The next call on the model sees what the fit before it made.
    expect(calls.of(first.id).call.model).toMatchObject({ modelId: m1.id, revision: 2n, size: 1 });
    expect(await calls.of(first.id).call.model?.bytes()).toEqual(new Uint8Array([2]));

    calls.of(first.id).finish({ value: 1 });
    await settle();
    expect(calls.actionIds.slice(2)).toEqual([first.id, second.id]);
    calls.of(second.id).finish({ value: 2 });
    calls.of(other.id).finish({ value: 3 });
    expect((await engine.waitAction(second.id, ActionView.BASIC)).status).toBe(ActionStatus.SUCCEEDED);
  });

  test("a call whose caller waits for its end is stored with its end: its creation and start may linger; one acknowledged before it runs is stored first", async () => {
    const model = await addModel();
    const { QUEUED, EXECUTING, SUCCEEDED } = ActionStatus;
    const waited = track(engine.predict(model.id, { ...request([1]), wait: true }));
    const acknowledged = await engine.predict(model.id, request([2]));
    // With a request_id the call is found again by it after a restart: it is stored first too.
    const named = track(engine.predict(model.id, { ...request([3]), wait: true, requestId: "r-1" }));
    await settle();
    const [first] = calls.actionIds;
    calls.of(first!).finish({ value: 1 });
    await settle();
    calls.of(acknowledged.id).finish({ value: 2 });
    await settle();
    calls.of(calls.actionIds[2]!).finish({ value: 3 });
    await settle();
    expect(waited.done && named.done).toBe(true);
    // Its creation may wait for its end as long as a call queues under load; its start, briefly.
    expect(store.lingerOf(first!)).toEqual([
      [QUEUED, 1000],
      [EXECUTING, 50],
      [SUCCEEDED, 0],
    ]);
    expect(store.lingerOf(acknowledged.id)).toEqual([
      [QUEUED, 0],
      [EXECUTING, 50],
      [SUCCEEDED, 0],
    ]);
    expect(store.lingerOf(calls.actionIds[2]!)[0]).toEqual([QUEUED, 0]);
  });

  test("a call cancelled while it waits for its model ends CANCELLED at once, in phase QUEUED, and never reaches the plugin", async () => {
    const model = await addModel();
    const running = await engine.predict(model.id, none);
    const queued = await engine.predict(model.id, none);
    await settle();

    const cancelled = track(engine.cancelAction(queued.id));
    await settle();
    expect(cancelled.done).toBe(true);
    expect(cancelled.value).toMatchObject({
      status: ActionStatus.CANCELLED,
      error: { code: "cancelled" },
      cancel: { by: "CancelAction", phase: ActionStatus.QUEUED },
    });
    expect((await store.getAction(queued.id))?.action.status).toBe(ActionStatus.CANCELLED);

    calls.of(running.id).finish({ value: 1 });
    await settle();
    expect(calls.actionIds).toEqual([running.id]);
  });

  test("cancelling a running call aborts its plugin call's signal; the action ends CANCELLED once the call has stopped", async () => {
    const model = await addModel();
    const action = await engine.predict(model.id, none);
    await settle();
    const call = calls.of(action.id);
    calls.stopOnAbort = false; // the child takes its time to stop

    const cancelled = track(engine.cancelAction(action.id));
    await settle();
    expect(call.signal?.aborted).toBe(true);
    expect(cancelled.done).toBe(false);
    expect((await view(action.id)).status).toBe(ActionStatus.EXECUTING);

    call.fail(new ChildFailure("cancelled", "the action was cancelled"));
    await settle();
    expect(cancelled.value).toMatchObject({
      status: ActionStatus.CANCELLED,
      error: { code: "cancelled" },
      cancel: { by: "CancelAction", phase: ActionStatus.EXECUTING },
    });
  });

  test("a timeout counts from the action's creation: one still waiting for its model when it passes ends FAILED deadline_exceeded", async () => {
    const model = await addModel();
    const running = await engine.predict(model.id, none);
    await settle();
    // The new action's first write takes 3 s of its 5.
    const release = store.hold("putAction");
    const late = track(engine.predict(model.id, request([], 5000)));
    await vi.advanceTimersByTimeAsync(3000);
    release();
    await settle();
    const id = late.value!.id;

    await vi.advanceTimersByTimeAsync(1999);
    expect((await view(id)).status).toBe(ActionStatus.QUEUED);
    await vi.advanceTimersByTimeAsync(1);
    expect(await view(id)).toMatchObject({
      status: ActionStatus.FAILED,
      error: { code: "deadline_exceeded" },
      cancel: { by: "timeout", phase: ActionStatus.QUEUED },
    });
    calls.of(running.id).finish({ value: 1 });
    await settle();
    expect(calls.actionIds).toEqual([running.id]);
  });

  test("a running call past its timeout is stopped and ends FAILED deadline_exceeded", async () => {
    const model = await addModel();
    const action = await engine.predict(model.id, request([], 2000));
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(calls.of(action.id).signal?.aborted).toBe(true);
    expect(await view(action.id)).toMatchObject({
      status: ActionStatus.FAILED,
      error: { code: "deadline_exceeded" },
      cancel: { by: "timeout", phase: ActionStatus.EXECUTING },
    });
  });

  test("a store that refuses a new action fails the call that submits it, and the action ends FAILED without running", async () => {
    const model = await addModel();
    const events: StateEvent[] = [];
    engine.subscribe((event) => events.push(event));
    store.refuse("putAction", (action) => "status" in action && action.status === ActionStatus.QUEUED);

    await expect(engine.predict(model.id, none)).rejects.toMatchObject({ kind: "unavailable", message: "the store is unreachable" });
    const seen = events.flatMap((e) => (e.kind === "action_upserted" ? [e.action] : []));
    const id = seen[0]!.id;
    expect(seen.at(-1)).toMatchObject({ id, status: ActionStatus.FAILED, error: { code: "store_failed" } });
    expect((await view(id)).status).toBe(ActionStatus.FAILED);
    expect(engine.stats.waiting).toBe(0);
    await settle();
    expect(calls.calls).toEqual([]);
  });

  test("a fit's new revision and its SUCCEEDED end are stored in one write", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, none);
    await settle();
    calls.of(fit.id).finish({ instance: new Uint8Array([7]) });
    const ended = await engine.waitAction(fit.id, ActionView.BASIC);
    expect(ended).toMatchObject({ status: ActionStatus.SUCCEEDED, result: { model: { id: model.id, revision: 2n } } });

    const revision = store.log.find((w) => w.write === "putModel" && w.model.revision === 2n);
    expect(revision).toMatchObject({ ended: { id: fit.id, status: ActionStatus.SUCCEEDED } });
    expect(store.statusesOf(fit.id)).toEqual([ActionStatus.QUEUED, ActionStatus.EXECUTING, ActionStatus.STORING, ActionStatus.SUCCEEDED]);
    expect((await store.getModel(model.id))?.actionId).toBe(fit.id);
  });

  test("a fit whose new revision the store refuses ends FAILED store_failed, and the model stays as it was", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, none);
    await settle();
    store.refuse("putModel");
    calls.of(fit.id).finish({ instance: new Uint8Array([7]) });
    expect(await engine.waitAction(fit.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.FAILED, error: { code: "store_failed" } });
    expect(store.statusesOf(fit.id)).not.toContain(ActionStatus.SUCCEEDED);
    expect((await engine.getModel(model.id, true)).revision).toBe(1n);
    expect((await store.getModel(model.id))?.revision).toBe(1n);
  });

  test("a fit whose new revision the store refuses has the children forget that revision before the model's next call starts", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, none);
    const next = await engine.predict(model.id, none);
    await settle();
    // The fit's child keeps what it returns as revision 2, before the store has it.
    expect(calls.of(fit.id).call).toMatchObject({ model: { modelId: model.id, revision: 1n }, nextRevision: 2n });
    store.refuse("putModel");
    calls.of(fit.id).finish({ instance: new Uint8Array([7]) });
    expect(await engine.waitAction(fit.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.FAILED, error: { code: "store_failed" } });
    await settle();

    // A later fit makes revision 2 again, from other bytes: no child may serve this one as it.
    const after = calls.forgotten.filter((f) => f.arrival > calls.of(fit.id).arrival);
    expect(after).toEqual([{ modelId: model.id, keep: 1n, arrival: expect.any(Number) }]);
    expect(after[0]!.arrival).toBeLessThan(calls.of(next.id).arrival);
    expect(calls.of(next.id).call).toMatchObject({ model: { revision: 1n }, nextRevision: 2n });
    expect(await calls.of(next.id).call.model?.bytes()).toEqual(new Uint8Array([1]));
  });

  test("children forget a model's revisions once a newer one is stored, and all of them once the model is deleted", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, none);
    await settle();
    const since = calls.of(fit.id).arrival;
    calls.of(fit.id).finish({ instance: new Uint8Array([7]) });
    await engine.waitAction(fit.id, ActionView.BASIC);
    await settle();
    await engine.deleteModel(model.id);
    const after = calls.forgotten.filter((f) => f.arrival > since).map(({ modelId, keep }) => ({ modelId, keep }));
    expect(after).toEqual([
      { modelId: model.id, keep: 2n },
      { modelId: model.id, keep: undefined },
    ]);
  });

  test("close cancels what runs and what waits, and resolves once they have ended", async () => {
    const model = await addModel();
    const running = await engine.predict(model.id, none);
    const queued = await engine.predict(model.id, none);
    await settle();
    calls.stopOnAbort = false;

    const closing = track(engine.close());
    await settle();
    expect(calls.of(running.id).signal?.aborted).toBe(true);
    expect(closing.done).toBe(false);
    await expect(engine.predict(model.id, none)).rejects.toMatchObject({ kind: "shutting_down" });

    calls.of(running.id).fail(new ChildFailure("cancelled", "the action was cancelled"));
    await settle();
    expect(closing.done).toBe(true);
    expect((await store.getAction(running.id))?.action).toMatchObject({
      status: ActionStatus.CANCELLED,
      error: { code: "shutting_down" },
      cancel: { by: "shutdown", phase: ActionStatus.EXECUTING },
    });
    expect((await store.getAction(queued.id))?.action).toMatchObject({
      status: ActionStatus.CANCELLED,
      cancel: { by: "shutdown", phase: ActionStatus.QUEUED },
    });
    expect(calls.actionIds).toEqual([running.id]);
  });

  test("predicts of a concurrent model type run at once up to max_replicas; a fit waits for those before it, and those after it see its revision", async () => {
    await engine.close();
    const CONCURRENT = "fake.Concurrent";
    engine = await openFastEngine({ store, processes: calls, plugins: pluginRegistry([CONCURRENT], [], { [CONCURRENT]: 2 }) });
    const model = await engine.addInstance(CONCURRENT, new Uint8Array([1]));
    const before = [
      await engine.predict(model.id, request([1])),
      await engine.predict(model.id, request([2])),
      await engine.predict(model.id, request([3])),
    ];
    const fit = await engine.fit(model.id, none);
    const after = await engine.predict(model.id, request([4]));
    await settle();
    // Two at once (max_replicas 2); the third waits for one of them, the fit for all three.
    expect(calls.actionIds).toEqual([before[0]!.id, before[1]!.id]);
    calls.of(before[0]!.id).finish({ value: 1 });
    await settle();
    expect(calls.actionIds).toEqual([before[0]!.id, before[1]!.id, before[2]!.id]);
    calls.of(before[1]!.id).finish({ value: 2 });
    calls.of(before[2]!.id).finish({ value: 3 });
    await settle();
    expect(calls.actionIds.slice(3)).toEqual([fit.id]);
    expect((await view(after.id)).status).toBe(ActionStatus.QUEUED);
    calls.of(fit.id).finish({ instance: new Uint8Array([2]) });
    await settle();
    expect(calls.actionIds.slice(4)).toEqual([after.id]);
    calls.of(after.id).finish({ value: 4 });
    // Each action records the revision its call ran on.
    const revisions = await Promise.all([...before, fit, after].map(async (a) => (await engine.waitAction(a.id, ActionView.BASIC)).modelRevision));
    expect(revisions).toEqual([1n, 1n, 1n, 1n, 2n]);
  });

  test("a change sends the batch filling on its model at once: a fit, and an UpdateInstance", async () => {
    await engine.close();
    const BATCHED = "fake.Batched";
    const plugins = pluginRegistry([BATCHED], [], { [BATCHED]: 2 }, { [BATCHED]: { maxSize: 8, maxWaitMs: 600_000 } });
    engine = await openFastEngine({ store, processes: calls, plugins });
    const model = await engine.addInstance(BATCHED, new Uint8Array([1]));
    const first = await engine.predict(model.id, request([1]));
    await settle();
    // A batch of 8 that would wait ten minutes for the rest.
    expect(calls.calls).toHaveLength(0);
    const update = track(engine.updateInstance(model.id, new Uint8Array([2])));
    await settle();
    expect(calls.calls.map((c) => c.items?.map((item) => item.actionId))).toEqual([[first.id]]);
    expect(update.done).toBe(false);
    calls.calls[0]!.finish({ value: 1 });
    await settle();
    expect(update.value?.revision).toBe(2n);

    const second = await engine.predict(model.id, request([2]));
    await settle();
    expect(calls.calls).toHaveLength(1);
    const fit = await engine.fit(model.id, none);
    await settle();
    expect(calls.calls[1]!.items?.map((item) => item.actionId)).toEqual([second.id]);
    calls.calls[1]!.finish({ value: 2 });
    await settle();
    expect(calls.actionIds.at(-1)).toBe(fit.id);
  });

  test("drain refuses new actions with UNAVAILABLE and resolves once what was queued and running has ended; waits are answered meanwhile", async () => {
    const model = await addModel();
    const running = await engine.fit(model.id, none);
    const queued = await engine.predict(model.id, none);
    await settle();
    const drained = track(engine.drain(60_000));
    await settle();
    await expect(engine.predict(model.id, none)).rejects.toMatchObject({
      kind: "unavailable",
      message: expect.stringMatching(/^the server is draining/),
    });
    const waited = track(engine.waitAction(running.id, ActionView.BASIC));
    calls.of(running.id).finish({ instance: new Uint8Array([2]) });
    await settle();
    expect((waited.value as { status: ActionStatus } | undefined)?.status).toBe(ActionStatus.SUCCEEDED);
    // The predict queued before the drain runs too; then the drain is over.
    expect(drained.done).toBe(false);
    calls.of(queued.id).finish({ value: 1 });
    await settle();
    expect(drained.done).toBe(true);
    expect((await view(queued.id)).status).toBe(ActionStatus.SUCCEEDED);
  });

  test("drain ends at its grace, or at once when hurried, with what runs still running (close then cancels it)", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, none);
    await settle();
    const graced = track(engine.drain(5_000));
    await vi.advanceTimersByTimeAsync(4_999);
    expect(graced.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(graced.done).toBe(true);
    const hurry = new AbortController();
    const hurried = track(engine.drain(60_000, hurry.signal));
    await settle();
    hurry.abort();
    await settle();
    expect(hurried.done).toBe(true);
    expect((await view(fit.id)).status).toBe(ActionStatus.EXECUTING);
  });
});
