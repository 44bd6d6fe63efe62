import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { dataAccess, json, jsonOf, stateOf } from "./helpers/args.ts";
import { isAlive } from "./helpers/processes.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer;
let modelId: string;
beforeAll(async () => {
  t = await startTestServer({
    engine: { sigterm_timeout: 1 },
    plugins: [{ module: fixture("misbehave.ts") }, { module: "plugins/system-test/mod.ts" }],
  });
  modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
});
afterAll(() => t?.close());

async function stillServes() {
  const ok = (await t.engine.predict({ modelId, wait: true })).action!;
  expect(ok.status).toBe(ActionStatus.SUCCEEDED);
  expect(jsonOf(ok.result?.prediction)).toBe("ok");
}

describe("a misbehaving plugin fails its own action and nothing else", () => {
  it("a plugin that throws fails the action with its message and stack", async () => {
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("throw") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("plugin_error");
    expect(action.error?.message).toBe("RangeError: the plugin threw on purpose");
    expect(action.error?.stack).toContain("misbehave.ts");
    await stillServes();
  });

  it("a PluginError's code, message and details become the action's error; an engine code stays plugin_error", async () => {
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("plugin_error") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("bad_input");
    expect(action.error?.message).toBe("rows must be positive");
    expect(stateOf(action.error!.details)).toEqual({ rows: -1 });
    expect(action.error?.stack).toContain("misbehave.ts");
    const reserved = (await t.engine.predict({ modelId, kwargs: { mode: json("plugin_error"), code: json("cancelled") }, wait: true })).action!;
    expect(reserved.error?.code).toBe("plugin_error");
    expect(reserved.error?.message).toBe('PluginError "cancelled": rows must be positive');
    await stillServes();
  });

  it("ctx.info tells the plugin its action, model, call and attempt", async () => {
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("info") }, wait: true })).action!;
    expect(jsonOf(action.result!.prediction)).toEqual({ actionId: action.id, modelId, target: "misbehave.Model", call: "predict", attempt: 1 });
  });

  it("a plugin that exits mid-call fails the action with the exit code and its last output", async () => {
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("exit") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("plugin_exited");
    expect(action.error?.message).toMatch(/exited with code 3 before answering/);
    expect(action.logTail).toContain("about to exit");
    await stillServes();
  });

  it("what a plugin prints does not corrupt the protocol and ends up in the log tail", async () => {
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("print") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(action.result?.prediction)).toBe("printed");
    expect(action.logTail).toEqual(expect.arrayContaining(["printed with console.log", "written to process.stdout", "info line"]));
  });

  it("a failing data access fails the action and names the argument", async () => {
    const action = (
      await t.engine.predict({
        modelId,
        args: [json(1)],
        kwargs: { data: dataAccess("misbehave.fail"), slow: dataAccess("systest.echo", [], { sleep: json(30) }) },
        wait: true,
      })
    ).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("data_access_failed");
    expect(action.error?.message).toBe('data access "misbehave.fail" for kwargs.data failed: Error: data access failed on purpose');
    const entries = Object.fromEntries(action.dataAccess.map((d) => [d.argument, d.status]));
    // The sibling was cancelled rather than left to run for 30 s: no child is busy.
    expect(entries).toEqual({ "kwargs.data": ActionStatus.FAILED, "kwargs.slow": ActionStatus.CANCELLED });
    expect(t.server.processes.live - t.server.processes.idle).toBe(0);
  });

  it("cancelling a plugin that ignores SIGTERM kills it after sigterm_timeout", async () => {
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("ignore_sigterm") } });
    const view = await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const { pid } = stateOf(view.get(action!.id)!.state) as { pid: number };
    const started = performance.now();
    const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
    const took = performance.now() - started;
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    expect(cancelled.error?.message).toBe("cancelled by CancelAction");
    // sigterm_timeout is 1 s: not before it, and not long after (the bound far above a busy machine's delays).
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(30_000);
    expect(isAlive(pid)).toBe(false);
    expect(cancelled.cancel).toMatchObject({ by: "CancelAction", phase: ActionStatus.EXECUTING, forced: true, signal: "SIGKILL" });
    await stillServes();
  });

  it("a plugin's own subprocess dies with it when its action is cancelled", async () => {
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("spawn_sleep") } });
    const view = await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const sleeper = (stateOf(view.get(action!.id)!.state) as { sleeper: number }).sleeper;
    expect(isAlive(sleeper)).toBe(true);
    await t.actions.cancelAction({ actionId: action!.id });
    expect(isAlive(sleeper)).toBe(false);
  });
});

describe("a plugin module that cannot load", () => {
  it("stops the server at start with the config key and the error", async () => {
    await expect(startTestServer({ plugins: [{ module: fixture("broken-load.ts") }] })).rejects.toThrow(
      /config plugins\[0\]\.module: plugin .*broken-load\.ts failed to load: Error: this module is broken on purpose/,
    );
  });
});
