import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { pluginChildren } from "./helpers/processes.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";
import { watchActions } from "./helpers/watch.ts";

const MAX = 3;
let t: TestServer;
beforeAll(async () => {
  // sigterm_timeout far above a busy machine's delays: a cancel that needs SIGKILL shows as forced.
  t = await startTestServer({ engine: { max_children: MAX, sigterm_timeout: 30 }, plugins: [{ module: "plugins/system-test/mod.ts" }] });
});
afterAll(() => t?.close());

const count = (view: Map<string, { status: ActionStatus }>, ids: string[], status: ActionStatus) =>
  ids.filter((id) => view.get(id)?.status === status).length;

describe("max_children", () => {
  it("runs N long calls on N different models at once, and no more", async () => {
    const models = await Promise.all(
      Array.from({ length: MAX + 1 }, async () => (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId),
    );
    // Every live child shows up as an executing action; sample the most seen at once.
    let most = 0;
    const unsubscribe = t.server.engine.subscribe(() => {
      most = Math.max(most, t.server.processes.live);
    });
    const ids: string[] = [];
    for (const modelId of models) ids.push((await t.engine.predict({ modelId, kwargs: { sleep: json(60) } })).action!.id);

    const view = await watchActions(t, (v) => count(v, ids, ActionStatus.EXECUTING) === MAX);
    // MAX ran at once: the children are there in the operating system too; the last one waits.
    expect(pluginChildren(process.pid)).toHaveLength(MAX);
    expect(count(view, ids, ActionStatus.QUEUED)).toBe(1);
    expect(t.server.processes.queued).toBe(1);

    // Cancel the first: the queued one takes its slot.
    await t.actions.cancelAction({ actionId: ids[0]! });
    const after = await watchActions(t, (v) => count(v, ids, ActionStatus.EXECUTING) === MAX);
    expect(after.get(ids[MAX]!)?.status).toBe(ActionStatus.EXECUTING);
    expect(pluginChildren(process.pid)).toHaveLength(MAX);

    await Promise.all(ids.map((actionId) => t.actions.cancelAction({ actionId })));
    unsubscribe();
    expect(most).toBe(MAX);
  });

  it("counts data-access sub-calls against max_children", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const slow = { kind: { case: "dataAccess" as const, value: { name: "systest.echo", kwargs: { sleep: json(60) } } } };
    const { action } = await t.engine.predict({ modelId, args: [slow, slow, slow, slow] });
    const id = action!.id;
    const running = (v: Map<string, { dataAccess: { status: ActionStatus }[] }>) =>
      v.get(id)?.dataAccess.filter((d) => d.status === ActionStatus.EXECUTING).length ?? 0;
    const view = await watchActions(t, (v) => running(v as never) === MAX);
    expect(view.get(id)!.dataAccess.filter((d) => d.status === ActionStatus.QUEUED)).toHaveLength(1);
    expect(view.get(id)!.status).toBe(ActionStatus.ACCESSING_DATA);
    expect(pluginChildren(process.pid)).toHaveLength(MAX);
    const cancelled = (await t.actions.cancelAction({ actionId: id })).action!;
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    expect(cancelled.dataAccess.every((d) => d.status === ActionStatus.CANCELLED)).toBe(true);
  });
});

describe("cancel", () => {
  it("ends a queued action at once, without ever starting a child for it", async () => {
    const models = await Promise.all(
      Array.from({ length: MAX + 1 }, async () => (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId),
    );
    const ids: string[] = [];
    for (const modelId of models) ids.push((await t.engine.predict({ modelId, kwargs: { sleep: json(60) } })).action!.id);
    await watchActions(t, (v) => count(v, ids, ActionStatus.EXECUTING) === MAX);
    const queued = ids[MAX]!;
    const cancelled = (await t.actions.cancelAction({ actionId: queued })).action!;
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    expect(cancelled.cancel).toMatchObject({ phase: ActionStatus.QUEUED, forced: false });
    expect(cancelled.startTime).toBeDefined();
    // It did not wait for a slot: the 60-second calls that hold them all still run.
    for (const id of ids.slice(0, MAX)) expect((await t.actions.getAction({ actionId: id })).action!.status).toBe(ActionStatus.EXECUTING);
    expect(t.server.processes.live).toBe(MAX);
    await Promise.all(ids.map((actionId) => t.actions.cancelAction({ actionId })));
  });

  it("stops a running cooperative action quickly and leaves the model as it was", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await t.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    await watchActions(t, (v) => v.get(action!.id)?.status === ActionStatus.EXECUTING);
    const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
    // The plugin aborted on ctx.signal and its child exited by itself: no SIGKILL.
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    expect(cancelled.cancel).toMatchObject({ phase: ActionStatus.EXECUTING, forced: false, signal: "" });
    expect(cancelled.result).toBeUndefined();
    const model = (await t.engine.getModel({ modelId })).model!;
    expect(model.revision).toBe(1n);
    // The cancelled child is gone: only idle children are left.
    expect(t.server.processes.live - t.server.processes.idle).toBe(0);
  });

  it("answers an ended action as it is", async () => {
    const done = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!;
    const again = (await t.actions.cancelAction({ actionId: done.id })).action!;
    expect(again.status).toBe(ActionStatus.SUCCEEDED);
  });
});
