import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionCall, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

describe("the AIMM workflow through the real server", () => {
  it("creates with args and kwargs, fits, predicts, and each step shows on the model and the action", async () => {
    const revisionBefore = (await t.state.getState({})).state!.revision;

    const created = await t.engine.createInstance({
      modelType: "systest.Model",
      args: [json(1), json("two")],
      kwargs: { three: json({ four: 4 }) },
      wait: true,
    });
    const create = created.action!;
    expect(create.call).toBe(ActionCall.CREATE_INSTANCE);
    expect(create.status).toBe(ActionStatus.SUCCEEDED);
    expect(create.error).toBeUndefined();
    const modelId = create.modelId;
    expect(create.result?.model?.id).toBe(modelId);
    expect(create.result?.model?.revision).toBe(1n);

    const fitted = (await t.engine.fit({ modelId, args: [json([1, 2, 3])], kwargs: { epochs: json(2) }, wait: true })).action!;
    expect(fitted.status).toBe(ActionStatus.SUCCEEDED);
    expect(fitted.call).toBe(ActionCall.FIT);
    expect(fitted.result?.model?.revision).toBe(2n);
    expect(fitted.result?.model?.actionId).toBe(fitted.id);

    const predicted = (await t.engine.predict({ modelId, args: [json("x")], kwargs: { k: json(true) }, wait: true })).action!;
    expect(predicted.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(predicted.result?.prediction)).toEqual({
      args: ["x"],
      kwargs: { k: true },
      instance: {
        args: { args: [1, "two"], kwargs: { three: { four: 4 } } },
        fits: [{ args: [[1, 2, 3]], kwargs: { epochs: 2 } }],
      },
    });
    // A plain prediction leaves the model where it was.
    expect(predicted.result?.model).toBeUndefined();
    const model = (await t.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(model.revision).toBe(2n);
    expect(JSON.parse(new TextDecoder().decode(model.instance))).toEqual({
      args: { args: [1, "two"], kwargs: { three: { four: 4 } } },
      fits: [{ args: [[1, 2, 3]], kwargs: { epochs: 2 } }],
    });
    expect(model.instanceSize).toBe(BigInt(model.instance.byteLength));

    const state = (await t.state.getState({})).state!;
    expect(state.revision).toBeGreaterThan(revisionBefore);
    expect(state.models.find((m) => m.id === modelId)?.instance.byteLength).toBe(0);
    expect(state.actions.map((a) => a.id)).toEqual(expect.arrayContaining([create.id, fitted.id, predicted.id]));

    const listed = await t.actions.listActions({ modelId });
    expect(listed.actions.map((a) => a.id)).toEqual([predicted.id, fitted.id, create.id]);
  });

  it("stores the updated instance a predict returns as the model's next revision", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const action = (await t.engine.predict({ modelId, args: [json(5)], kwargs: { remember: json(true) }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(action.result?.prediction)).toMatchObject({ args: [5] });
    expect(action.result?.model?.revision).toBe(2n);
    const model = (await t.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(model.revision).toBe(2n);
    expect(JSON.parse(new TextDecoder().decode(model.instance)).predictions).toEqual([{ args: [5], kwargs: {} }]);
  });

  it("returns the action at once without wait, and WaitAction gives it once ended", async () => {
    const { action } = await t.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json(0.3) } });
    expect(action!.status).toBe(ActionStatus.QUEUED);
    const ended = (await t.actions.waitAction({ actionId: action!.id })).action!;
    expect(ended.status).toBe(ActionStatus.SUCCEEDED);
    expect(ended.endTime).toBeDefined();
  });

  it("reports the plugin's progress on the action while it runs", async () => {
    // The fit waits behind another on its model until the watch is open: it sees the whole run.
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const blocker = (await t.engine.fit({ modelId, kwargs: { sleep: json(60) } })).action!;
    const { action } = await t.engine.fit({ modelId, kwargs: { sleep: json(1) } });
    const states: number[] = [];
    let released = false;
    for await (const update of t.actions.watchAction({ actionId: action!.id })) {
      if (!released && update.action!.status === ActionStatus.QUEUED) {
        released = true;
        await t.actions.cancelAction({ actionId: blocker.id });
      }
      const state = update.action!.state;
      if (state?.kind.case === "structValue") {
        const progress = state.kind.value.fields.progress;
        if (progress?.kind.case === "numberValue") states.push(progress.kind.value);
      }
    }
    // The stream ended with the action, after several progress reports that only rise.
    expect(states.length).toBeGreaterThan(2);
    expect([...states].sort((a, b) => a - b)).toEqual(states);
    expect(states.at(-1)).toBe(1);
  });

  it("serializes calls on one model and runs different models in parallel", async () => {
    const a = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const b = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    // Model b's fit runs until cancelled: model a's two fits run while it does.
    const b1 = (await t.engine.fit({ modelId: b, kwargs: { sleep: json(60) } })).action!;
    await watchActions(t, (v) => v.get(b1.id)?.status === ActionStatus.EXECUTING);
    const calls = await Promise.all([
      t.engine.fit({ modelId: a, kwargs: { sleep: json(1) }, wait: true }),
      t.engine.fit({ modelId: a, kwargs: { sleep: json(1) }, wait: true }),
    ]);
    const [a1, a2] = calls.map((c) => c.action!);
    const ms = (ts: { seconds: bigint; nanos: number } | undefined) => Number(ts!.seconds) * 1000 + ts!.nanos / 1e6;
    // The second fit of model a starts only after the first ended: both fits are recorded.
    const [first, second] = ms(a1!.startTime) < ms(a2!.startTime) ? [a1!, a2!] : [a2!, a1!];
    expect(ms(second.startTime)).toBeGreaterThanOrEqual(ms(first.endTime));
    expect(second.result?.model?.revision).toBe(first.result!.model!.revision + 1n);
    // Model b's fit ran all the while.
    expect((await t.actions.cancelAction({ actionId: b1.id })).action!.cancel?.phase).toBe(ActionStatus.EXECUTING);
    const instance = (await t.engine.getModel({ modelId: a, includeInstance: true })).model!.instance;
    expect(JSON.parse(new TextDecoder().decode(instance)).fits).toHaveLength(2);
  });

  it("adds, updates, lists and deletes models", async () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ args: null, fits: [] }));
    const added = (await t.engine.addInstance({ modelType: "systest.Model", instance: bytes })).model!;
    expect(added.revision).toBe(1n);
    const updated = (await t.engine.updateInstance({ modelId: added.id, instance: new TextEncoder().encode('{"args":1,"fits":[]}') })).model!;
    expect(updated.revision).toBe(2n);
    const predicted = (await t.engine.predict({ modelId: added.id, wait: true })).action!;
    expect(jsonOf(predicted.result?.prediction)).toMatchObject({ instance: { args: 1 } });

    const page1 = await t.engine.listModels({ pageSize: 1 });
    expect(page1.models).toHaveLength(1);
    expect(page1.nextPageToken).not.toBe("");
    const page2 = await t.engine.listModels({ pageSize: 1, pageToken: page1.nextPageToken });
    expect(page2.models[0]!.id).not.toBe(page1.models[0]!.id);

    await t.engine.deleteModel({ modelId: added.id });
    await expect(t.engine.getModel({ modelId: added.id })).rejects.toThrow(/not found/);
    const plugins = (await t.engine.listPlugins({})).plugins;
    expect(plugins.map((p) => p.name).sort()).toEqual(["iris", "systest"]);
  });
});
