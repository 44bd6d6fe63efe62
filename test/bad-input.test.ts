import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DType } from "../gen/plinth/v1/arg_pb.ts";
import { dataAccess, json } from "./helpers/args.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

let t: TestServer;
let modelId: string;
beforeAll(async () => {
  t = await startTestServer({ plugins: [{ module: "plugins/system-test/mod.ts" }] });
  modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
});
afterAll(() => t?.close());

describe("bad input gets a precise status and a message that says what to fix", () => {
  it("unknown model type → INVALID_ARGUMENT listing the known ones", async () => {
    await expectStatus(
      t.engine.createInstance({ modelType: "nope.Model" }),
      Status.INVALID_ARGUMENT,
      /^model_type "nope.Model" is not declared by any loaded plugin; known model types: systest.Model$/,
    );
    await expectStatus(t.engine.createInstance({}), Status.INVALID_ARGUMENT, /model_type is required/);
    await expectStatus(t.engine.addInstance({ modelType: "nope" }), Status.INVALID_ARGUMENT, /model_type "nope"/);
  });

  it("unknown model id → NOT_FOUND", async () => {
    await expectStatus(t.engine.fit({ modelId: "m-missing" }), Status.NOT_FOUND, /^model m-missing not found$/);
    await expectStatus(t.engine.predict({ modelId: "m-missing" }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.engine.getModel({ modelId: "m-missing" }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.engine.deleteModel({ modelId: "m-missing" }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.engine.updateInstance({ modelId: "m-missing" }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.actions.getAction({ actionId: "a-missing" }), Status.NOT_FOUND, /^action a-missing not found$/);
    await expectStatus(t.actions.cancelAction({ actionId: "a-missing" }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.engine.fit({}), Status.INVALID_ARGUMENT, /^model_id is required$/);
  });

  it("malformed args → INVALID_ARGUMENT naming the argument, and no action is created", async () => {
    const before = (await t.actions.listActions({})).actions.length;
    await expectStatus(
      t.engine.predict({ modelId, args: [json(1), {}] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[1\]: set one of json, json_text, bytes, tensor, list, map or data_access$/,
    );
    await expectStatus(
      t.engine.predict({
        modelId,
        kwargs: { x: { kind: { case: "tensor", value: { dtype: DType.FLOAT64, shape: [2, 2], data: new Uint8Array(8) } } } },
      }),
      Status.INVALID_ARGUMENT,
      /^argument kwargs.x: a tensor of shape \[2, 2\] needs 32 bytes of data, got 8$/,
    );
    await expectStatus(
      t.engine.predict({ modelId, kwargs: { x: { kind: { case: "tensor", value: { shape: [1] } } } } }),
      Status.INVALID_ARGUMENT,
      /tensor dtype must be set/,
    );
    await expectStatus(
      t.engine.predict({ modelId, args: [dataAccess("systest.add", [dataAccess("no.such")])] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\].args\[0\]: "no.such" is not a data-access function of any loaded plugin \(see ListPlugins\)$/,
    );
    await expectStatus(t.engine.predict({ modelId, args: [dataAccess("")] }), Status.INVALID_ARGUMENT, /data_access needs a name/);
    expect((await t.actions.listActions({})).actions.length).toBe(before);
  });

  it("bad paging → INVALID_ARGUMENT", async () => {
    await expectStatus(t.engine.listModels({ pageSize: 5000 }), Status.INVALID_ARGUMENT, /page_size: at most 1000, got 5000/);
  });

  it("deleting a model with a running action → FAILED_PRECONDITION, and the model stays", async () => {
    const { action } = await t.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    await expectStatus(t.engine.deleteModel({ modelId }), Status.FAILED_PRECONDITION, /has 1 queued or running action\(s\); cancel them/);
    await t.actions.cancelAction({ actionId: action!.id });
    expect((await t.engine.getModel({ modelId })).model!.id).toBe(modelId);
  });

  it("a client that gives up waiting gets DEADLINE_EXCEEDED while the action goes on", async () => {
    const { action } = await t.engine.predict({ modelId, kwargs: { sleep: json(2) } });
    await expectStatus(
      t.actions.waitAction({ actionId: action!.id }, { deadline: new Date(Date.now() + 200) }),
      Status.DEADLINE_EXCEEDED,
      /Deadline exceeded/,
    );
    const ended = (await t.actions.waitAction({ actionId: action!.id })).action!;
    expect(ended.endTime).toBeDefined();
  });
});
