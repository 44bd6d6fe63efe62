/**
 * Retry policies (RetryPolicy, plugins[].retry), in milliseconds: which failures run
 * again, the waits between attempts on a fake clock, what the action shows meanwhile, and
 * how cancel, timeouts and the model's other calls meet a pending retry.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { ActionStatus, ActionView, type RetryPolicy, RetryPolicySchema } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import type { ActionRequest, Engine } from "../../server/engine/engine.ts";
import { ChildFailure } from "../../server/process/child.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { openFastEngine, request, settle, track } from "../helpers/fast-engine.ts";
import { TestStore } from "../helpers/test-store.ts";

vi.setConfig({ testTimeout: 10_000 });

const TYPE = "fake.Model";
const CONFIGURED = "fake.Retried";

let store: TestStore;
let calls: FakePluginCalls;
let engine: Engine;

const policy = (fields: {
  maxAttempts?: number;
  backoffCoefficient?: number;
  nonRetryableErrorCodes?: string[];
  initialMs?: number;
  maximumMs?: number;
}): RetryPolicy => {
  const { initialMs, maximumMs, ...rest } = fields;
  return create(RetryPolicySchema, {
    ...rest,
    ...(initialMs ? { initialInterval: durationFromMs(initialMs) } : {}),
    ...(maximumMs ? { maximumInterval: durationFromMs(maximumMs) } : {}),
  });
};
const retried = (retry: RetryPolicy, timeoutMs?: number): ActionRequest => ({ ...request([], timeoutMs), retry });

beforeEach(async () => {
  vi.useFakeTimers();
  store = new TestStore();
  calls = new FakePluginCalls();
  const plugins = pluginRegistry([TYPE, CONFIGURED], [], {}, {}, { [CONFIGURED]: policy({ maxAttempts: 2, initialMs: 500 }) });
  engine = await openFastEngine({ store, processes: calls, plugins });
});

afterEach(async () => {
  calls.stopOnAbort = true;
  await engine.close();
  vi.useRealTimers();
});

const addModel = (type = TYPE): Promise<Model> => engine.addInstance(type, new Uint8Array([1]));
const view = (id: string) => engine.getAction(id, ActionView.BASIC);
const callsOf = (id: string) => calls.calls.filter((c) => c.actionId === id);
const exited = () => new ChildFailure("plugin_exited", "the plugin's child exited with code 1 before answering");

describe("retry policy", () => {
  test("a call that fails twice runs a third time after 1 s and then 2 s, and succeeds: the action shows each attempt", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 3 })));
    expect(action).toMatchObject({ attempt: 1, retry: { maxAttempts: 3, backoffCoefficient: 2 } });
    await settle();
    expect(callsOf(action.id).map((c) => c.call.attempt)).toEqual([1]);

    calls.of(action.id).fail(exited());
    await settle();
    const waiting = await view(action.id);
    expect(waiting).toMatchObject({ status: ActionStatus.QUEUED, attempt: 2, attempts: [{ attempt: 1, error: { code: "plugin_exited" } }] });
    expect(timestampMs(waiting.nextAttemptTime!) - Date.now()).toBe(1000);
    expect((await store.getAction(action.id))?.action).toMatchObject({ status: ActionStatus.QUEUED, attempt: 2 });
    await vi.advanceTimersByTimeAsync(999);
    expect(callsOf(action.id)).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(callsOf(action.id).map((c) => c.call.attempt)).toEqual([1, 2]);
    expect((await view(action.id)).nextAttemptTime).toBeUndefined();

    calls.of(action.id).fail(); // the plugin threw: plugin_error
    await settle();
    expect((await view(action.id)).attempt).toBe(3);
    await vi.advanceTimersByTimeAsync(1999);
    expect(callsOf(action.id)).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    calls.of(action.id).finish({ instance: new Uint8Array([7]) });

    const ended = await engine.waitAction(action.id, ActionView.BASIC);
    expect(ended).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 3, result: { model: { revision: 2n } } });
    expect(ended.error).toBeUndefined();
    expect(ended.attempts.map((a) => [a.attempt, a.error?.code])).toEqual([
      [1, "plugin_exited"],
      [2, "plugin_error"],
    ]);
    expect(ended.nextAttemptTime).toBeUndefined();
  });

  test("the last attempt's failure ends the action FAILED with its error; the earlier ones are listed", async () => {
    const model = await addModel();
    const action = await engine.predict(model.id, retried(policy({ maxAttempts: 2, initialMs: 10 })));
    await settle();
    calls.of(action.id).fail(exited());
    await vi.advanceTimersByTimeAsync(10);
    calls.of(action.id).fail(new ChildFailure("out_of_memory", "the plugin went over plugins[0].max_memory_mb"));
    const ended = await engine.waitAction(action.id, ActionView.BASIC);
    expect(ended).toMatchObject({ status: ActionStatus.FAILED, attempt: 2, error: { code: "out_of_memory" } });
    expect(ended.attempts.map((a) => a.error?.code)).toEqual(["plugin_exited"]);
  });

  test("no policy: one attempt, as before retries existed", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, request());
    expect(action.retry).toBeUndefined();
    await settle();
    calls.of(action.id).fail(exited());
    expect(await engine.waitAction(action.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.FAILED, attempts: [] });
    expect(callsOf(action.id)).toHaveLength(1);
  });

  test.each([
    ["a PluginError code the policy lists", new ChildFailure("plugin_error", "bad data", "", { code: "bad_data", details: undefined }), "bad_data"],
    [
      "invalid arguments",
      new ChildFailure("plugin_error", "x must be a number", "", { code: "invalid_argument", details: undefined }),
      "invalid_argument",
    ],
    ["a protocol error", new ChildFailure("protocol_error", "frame too large"), "protocol_error"],
  ])("%s is never retried", async (_what, error, code) => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 5, nonRetryableErrorCodes: ["bad_data"] })));
    await settle();
    calls.of(action.id).fail(error);
    expect(await engine.waitAction(action.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.FAILED, attempt: 1, error: { code } });
    expect(callsOf(action.id)).toHaveLength(1);
  });

  test("a cancel during the wait for the next attempt ends the action at once, CANCELLED in phase QUEUED", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 3, initialMs: 60_000 })));
    await settle();
    calls.of(action.id).fail(exited());
    await settle();
    const cancelled = track(engine.cancelAction(action.id));
    await settle();
    expect(cancelled.done).toBe(true);
    expect(cancelled.value).toMatchObject({
      status: ActionStatus.CANCELLED,
      cancel: { by: "CancelAction", phase: ActionStatus.QUEUED },
      attempts: [{ error: { code: "plugin_exited" } }],
    });
    expect(cancelled.value?.nextAttemptTime).toBeUndefined();
    expect(callsOf(action.id)).toHaveLength(1);
  });

  test("the action's timeout bounds every attempt together: it ends deadline_exceeded during a wait", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 10, initialMs: 1000 }), 2500));
    await settle();
    calls.of(action.id).fail(exited());
    await vi.advanceTimersByTimeAsync(1000);
    calls.of(action.id).fail(exited());
    await vi.advanceTimersByTimeAsync(1500);
    expect(await view(action.id)).toMatchObject({ status: ActionStatus.FAILED, error: { code: "deadline_exceeded" }, attempt: 3 });
    expect(callsOf(action.id)).toHaveLength(2);
  });

  test("the waits grow by the coefficient up to maximum_interval", async () => {
    const model = await addModel();
    const action = await engine.predict(model.id, retried(policy({ maxAttempts: 5, initialMs: 100, backoffCoefficient: 3, maximumMs: 500 })));
    const waits: number[] = [];
    for (let attempt = 1; attempt < 5; attempt++) {
      await settle();
      calls.of(action.id).fail(exited());
      await settle();
      waits.push(timestampMs((await view(action.id)).nextAttemptTime!) - Date.now());
      await vi.advanceTimersByTimeAsync(waits.at(-1)!);
    }
    expect(waits).toEqual([100, 300, 500, 500]);
    calls.of(action.id).finish({ value: 1 });
    expect(await engine.waitAction(action.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 5 });
  });

  test("a later call on the model waits through the retries: per-model order holds", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, retried(policy({ maxAttempts: 2, initialMs: 1000 })));
    const predict = await engine.predict(model.id, request());
    await settle();
    calls.of(fit.id).fail(exited());
    await vi.advanceTimersByTimeAsync(1000);
    expect(calls.actionIds).toEqual([fit.id, fit.id]);
    calls.of(fit.id).finish({ instance: new Uint8Array([9]) });
    await settle();
    expect(calls.of(predict.id).call.model).toMatchObject({ revision: 2n });
  });

  test("a server that stops while a retry waits leaves it queued in the store; the next start runs that attempt when it is due", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 3, initialMs: 10_000 })));
    await settle();
    calls.of(action.id).fail(exited());
    await settle();
    const waiting = track(engine.waitAction(action.id, ActionView.BASIC));
    await engine.close();
    await settle();
    expect(waiting.error).toMatchObject({ kind: "unavailable", message: expect.stringContaining("it runs after the server's restart") });
    const stored = (await store.getAction(action.id))!.action;
    expect(stored).toMatchObject({ status: ActionStatus.QUEUED, attempt: 2, attempts: [{ error: { code: "plugin_exited" } }] });
    expect(stored.cancel).toBeUndefined();

    const restarted = new FakePluginCalls();
    engine = await openFastEngine({ store, processes: restarted, plugins: pluginRegistry([TYPE]) });
    await vi.advanceTimersByTimeAsync(9_999);
    expect(restarted.calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(restarted.of(action.id).call.attempt).toBe(2);
    restarted.of(action.id).finish({ instance: new Uint8Array([5]) });
    expect(await engine.waitAction(action.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 2 });
  });

  test("a drain does not wait for a retry's wait (the stop leaves it queued), only for what runs", async () => {
    const [m1, m2] = [await addModel(), await addModel()];
    const waiting = await engine.fit(m1.id, retried(policy({ maxAttempts: 2, initialMs: 60_000 })));
    const running = await engine.predict(m2.id, request());
    await settle();
    calls.of(waiting.id).fail(exited());
    await settle();
    const drained = track(engine.drain(30_000));
    await settle();
    expect(drained.done).toBe(false);
    calls.of(running.id).finish({ value: 1 });
    await settle();
    expect(drained.done).toBe(true);
    await engine.close();
    expect((await store.getAction(waiting.id))?.action).toMatchObject({ status: ActionStatus.QUEUED, attempt: 2 });
  });

  test("a retry whose wait ends while the server drains does not start: the stop leaves it queued", async () => {
    const [m1, m2] = [await addModel(), await addModel()];
    const fit = await engine.fit(m1.id, retried(policy({ maxAttempts: 3, initialMs: 1000 })));
    const running = await engine.predict(m2.id, request());
    await settle();
    calls.of(fit.id).fail(exited());
    await settle();
    const drained = track(engine.drain(60_000));
    await vi.advanceTimersByTimeAsync(5000);
    expect(callsOf(fit.id)).toHaveLength(1);
    calls.of(running.id).finish({ value: 1 });
    await settle();
    expect(drained.done).toBe(true);
    await engine.close();
    expect((await store.getAction(fit.id))?.action).toMatchObject({ status: ActionStatus.QUEUED, attempt: 2 });
  });

  test("a call waiting for its model behind a waiting retry does not hold the drain up; the stop cancels it, the retry stays queued", async () => {
    const model = await addModel();
    const fit = await engine.fit(model.id, retried(policy({ maxAttempts: 2, initialMs: 600_000 })));
    const predict = await engine.predict(model.id, request());
    await settle();
    calls.of(fit.id).fail(exited());
    await settle();
    const drained = track(engine.drain(60_000));
    await settle();
    expect(drained.done).toBe(true);
    await engine.close();
    expect((await store.getAction(fit.id))?.action.status).toBe(ActionStatus.QUEUED);
    expect((await store.getAction(predict.id))?.action).toMatchObject({ status: ActionStatus.CANCELLED, error: { code: "shutting_down" } });
  });

  test("a stop while an attempt runs fails that attempt interrupted and leaves the next one queued, as a crash would; without attempts left it is cancelled", async () => {
    const [m1, m2] = [await addModel(), await addModel()];
    const durable = await engine.fit(m1.id, retried(policy({ maxAttempts: 2, initialMs: 10_000 })));
    const last = await engine.fit(m2.id, retried(policy({ maxAttempts: 2, initialMs: 10 })));
    await settle();
    calls.of(last.id).fail(exited());
    await vi.advanceTimersByTimeAsync(10);
    expect(callsOf(last.id)).toHaveLength(2);
    await engine.close();
    expect((await store.getAction(durable.id))?.action).toMatchObject({
      status: ActionStatus.QUEUED,
      attempt: 2,
      attempts: [{ attempt: 1, error: { code: "interrupted", message: "the server stopped while the attempt ran" } }],
    });
    expect((await store.getAction(last.id))?.action).toMatchObject({ status: ActionStatus.CANCELLED, error: { code: "shutting_down" } });

    const restarted = new FakePluginCalls();
    engine = await openFastEngine({ store, processes: restarted, plugins: pluginRegistry([TYPE]) });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(restarted.of(durable.id).call.attempt).toBe(2);
    restarted.of(durable.id).finish({ instance: new Uint8Array([3]) });
    expect(await engine.waitAction(durable.id, ActionView.BASIC)).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 2 });
  });

  test("an earlier attempt keeps its error's code and the start of its message, not its stack", async () => {
    const model = await addModel();
    const action = await engine.fit(model.id, retried(policy({ maxAttempts: 2, initialMs: 10 })));
    await settle();
    calls.of(action.id).fail(new ChildFailure("plugin_error", `Error: ${"x".repeat(5000)}`, "at fit (plugin.ts:1)"));
    await settle();
    const [failed] = (await view(action.id)).attempts;
    expect(failed!.error).toMatchObject({ code: "plugin_error", stack: "" });
    expect(failed!.error!.message.length).toBeLessThanOrEqual(1001);
  });

  test("the plugin's configured policy applies; a request's fields go over it", async () => {
    const model = await addModel(CONFIGURED);
    const configured = await engine.fit(model.id, request());
    expect(configured.retry).toMatchObject({ maxAttempts: 2, initialInterval: { nanos: 500_000_000 } });
    const over = await engine.predict(model.id, retried(policy({ maxAttempts: 4 })));
    expect(over.retry).toMatchObject({ maxAttempts: 4, initialInterval: { nanos: 500_000_000 } });
    const once = await engine.predict(model.id, retried(policy({ maxAttempts: 1 })));
    expect(once.retry).toBeUndefined();
  });

  test.each([
    [{ maxAttempts: 101 }, "retry.max_attempts: at most 100"],
    [{ maxAttempts: 3, backoffCoefficient: 0.5 }, "retry.backoff_coefficient"],
    [{ maxAttempts: 3, initialMs: 5000, maximumMs: 1000 }, "retry.maximum_interval: must be at least initial_interval"],
    [{ maxAttempts: 3, nonRetryableErrorCodes: ["Bad Code"] }, "retry.non_retryable_error_codes"],
  ])("a policy out of bounds is refused before any action exists: %o", async (fields, message) => {
    const model = await addModel();
    await expect(engine.fit(model.id, retried(policy(fields)))).rejects.toMatchObject({
      kind: "invalid_argument",
      message: expect.stringContaining(message),
    });
    expect(calls.calls).toHaveLength(0);
  });
});
