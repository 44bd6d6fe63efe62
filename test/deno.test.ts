import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { denoBinary } from "../server/process/runtimes.ts";
import { dataAccess, json, jsonOf, stateOf } from "./helpers/args.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectSpinReportsAndStops } from "./helpers/spin.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    // Far above a busy machine's delays: a cancel that needs SIGKILL shows as forced.
    engine: { sigterm_timeout: 30 },
    plugins: [
      { module: "plugins/system-test/mod.ts", runtime: "deno" },
      { module: "plugins/iris/mod.ts", runtime: "deno" },
      { module: fixture("portable.ts"), runtime: "deno" },
    ],
  });
});
afterAll(() => t?.close());

describe("plugins under Deno, through the server", () => {
  it("lists the plugins with their runtime", async () => {
    const plugins = (await t.engine.listPlugins({})).plugins;
    expect(plugins.map((p) => [p.name, p.runtime])).toEqual([
      ["systest", "deno"],
      ["iris", "deno"],
      ["portable", "deno"],
    ]);
  });

  it("runs the AIMM workflow with keyword data access", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", args: [json("a")], wait: true })).action!.modelId;
    const fit = (await t.engine.fit({ modelId, kwargs: { n: dataAccess("systest.add", [json(1), json(2)]) }, wait: true })).action!;
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    const predicted = (await t.engine.predict({ modelId, args: [json(7)], wait: true })).action!;
    expect(jsonOf(predicted.result?.prediction)).toEqual({
      args: [7],
      kwargs: {},
      instance: { args: { args: ["a"], kwargs: {} }, fits: [{ args: [], kwargs: { n: 3 } }] },
    });
  });

  it("trains the Iris classifier above 0.9 accuracy", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!.modelId;
    const fit = (await t.engine.fit({ modelId, args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")], wait: true })).action!;
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    expect((stateOf(fit.state) as { accuracy: number }).accuracy).toBeGreaterThan(0.9);
  });

  it("keeps console.log off the protocol channel and in the log tail", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const action = (await t.engine.predict({ modelId, args: [json("x")], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(action.result?.prediction)).toEqual({ runtime: "deno", args: ["x"] });
    expect(action.logTail).toEqual(expect.arrayContaining(["console.log from the plugin", '{"level":"info","msg":"structured line","calls":0}']));
  });

  it("keeps every console method and Deno.stdout off the protocol channel, in the log tail", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const action = (await t.engine.predict({ modelId, args: [json("console")], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    const tail = action.logTail.join("\n");
    for (const line of [
      "info line",
      "debug line",
      "warn line",
      "error line",
      "counted: 2",
      "in the group",
      "timer: ",
      "traced",
      "asserted",
      "straight to stdout",
    ]) {
      expect(tail).toContain(line);
    }
    expect(tail).toMatch(/a:\s*1/); // the table's row
    expect(tail).toMatch(/nested:\s*true/); // the dir
  });

  it("ctx.sleep leaves no abort listener behind", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const action = (await t.engine.predict({ modelId, args: [json("sleep")], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(action.logTail.join("\n")).not.toMatch(/MaxListeners|listener/i);
  });

  it("a CPU-bound plugin (a synchronous loop) reports progress and is cancelled cooperatively", async () => {
    await expectSpinReportsAndStops(t);
  });

  it("aborts ctx.signal on cancel (SIGTERM reaches the Deno child)", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const { action } = await t.engine.predict({ modelId, args: [json("wait_for_cancel")] });
    await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    // Cooperative: the plugin saw the abort and its child exited by itself, no SIGKILL.
    expect(cancelled.cancel).toMatchObject({ phase: ActionStatus.EXECUTING, forced: false, signal: "" });
  });
});

describe("the SDK on Deno", () => {
  it("type-checks: deno check sdk/mod.ts", async () => {
    const { stderr } = await promisify(execFile)(denoBinary(), ["check", "sdk/mod.ts", "sdk/adapters/deno.ts"], {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1", DENO_DIR: `${root}node_modules/.cache/deno` },
    });
    expect(stderr).toMatch(/Check .*sdk\/mod\.ts/);
  });
});
