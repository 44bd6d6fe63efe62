import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { DType, TensorSchema } from "../gen/plinth/v1/arg_pb.ts";
import { dataAccess, json, jsonOf } from "./helpers/args.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer;
let modelId: string;
beforeAll(async () => {
  t = await startTestServer({ plugins: [{ module: "plugins/system-test/mod.ts" }] });
  modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
});
afterAll(() => t?.close());

describe("DataAccess arguments", () => {
  it("resolves a positional DataAccess argument before the call", async () => {
    const action = (await t.engine.predict({ modelId, args: [dataAccess("systest.add", [json(2), json(3)])], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(action.result?.prediction)).toMatchObject({ args: [5], kwargs: {} });
    expect(action.dataAccess).toHaveLength(1);
    expect(action.dataAccess[0]).toMatchObject({ argument: "args[0]", name: "systest.add", status: ActionStatus.SUCCEEDED });
  });

  it("resolves a keyword DataAccess argument (AIMM's broken path)", async () => {
    const action = (
      await t.engine.predict({ modelId, args: [json("plain")], kwargs: { total: dataAccess("systest.add", [json(40), json(2)]) }, wait: true })
    ).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(action.result?.prediction)).toMatchObject({ args: ["plain"], kwargs: { total: 42 } });
    expect(action.dataAccess.map((d) => d.argument)).toEqual(["kwargs.total"]);
  });

  it("resolves nested DataAccess arguments innermost first, each with its own progress entry", async () => {
    const nested = dataAccess("systest.echo", [dataAccess("systest.add", [json(1), json(2)])], {
      inner: dataAccess("systest.add", [json(10), dataAccess("systest.add", [json(20), json(30)])]),
    });
    const action = (await t.engine.fit({ modelId, args: [nested], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    const progress = Object.fromEntries(action.dataAccess.map((d) => [d.argument, [d.name, d.status]]));
    expect(progress).toEqual({
      "args[0].args[0]": ["systest.add", ActionStatus.SUCCEEDED],
      "args[0].kwargs.inner.args[1]": ["systest.add", ActionStatus.SUCCEEDED],
      "args[0].kwargs.inner": ["systest.add", ActionStatus.SUCCEEDED],
      "args[0]": ["systest.echo", ActionStatus.SUCCEEDED],
    });
    const instance = (await t.engine.getModel({ modelId, includeInstance: true })).model!.instance;
    const fits = JSON.parse(new TextDecoder().decode(instance)).fits;
    expect(fits.at(-1)).toEqual({ args: [{ args: [3], kwargs: { inner: 60 } }], kwargs: {} });
  });

  it("runs sibling DataAccess arguments in parallel", async () => {
    // Long enough never to end on their own here, however slow a second child is to start.
    const slow = (name: string) => dataAccess("systest.echo", [json(name)], { sleep: json(60) });
    const { action } = await t.engine.predict({ modelId, args: [slow("a"), slow("b")] });
    // Both run at once.
    const view = await watchActions(t, (v) => v.get(action!.id)?.dataAccess.filter((d) => d.status === ActionStatus.EXECUTING).length === 2);
    expect(view.get(action!.id)!.status).toBe(ActionStatus.ACCESSING_DATA);
    expect((await t.actions.cancelAction({ actionId: action!.id })).action!.status).toBe(ActionStatus.CANCELLED);
  });

  it("passes bytes and tensors through to the plugin", async () => {
    const tensor = create(TensorSchema, { dtype: DType.FLOAT32, shape: [2, 3], data: new Uint8Array(24) });
    const action = (
      await t.engine.predict({
        modelId,
        args: [{ kind: { case: "bytes", value: new Uint8Array([1, 2, 3]) } }, { kind: { case: "tensor", value: tensor } }],
        wait: true,
      })
    ).action!;
    expect(jsonOf(action.result?.prediction)).toMatchObject({
      args: [{ bytes: 3 }, { tensor: { dtype: "float32", shape: [2, 3] } }],
    });
  });
});
