/**
 * Idempotent requests (request_id): one action per caller and id, whether the repeats
 * come at once, after a restart (SQLite), or on two servers of a cluster (PostgreSQL); the
 * same id with other arguments is refused; the history's retention frees the id.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { Status } from "nice-grpc";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createPlinthClient } from "../client/mod.ts";
import { ActionCall, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";
import { tempDir } from "./helpers/temp.ts";

const systest = { module: join(root, "plugins/system-test/mod.ts") };
const decode = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

/** The fits the model's instance recorded, and its fit actions. */
async function fitsOf(t: TestServer, modelId: string) {
  const { model } = await t.engine.getModel({ modelId, includeInstance: true });
  const { actions } = await t.actions.listActions({ modelId });
  return {
    revision: model!.revision,
    recorded: decode(model!.instance).fits.length as number,
    actions: actions.filter((a) => a.call === ActionCall.FIT).map((a) => a.id),
  };
}

describe("request_id on SQLite", () => {
  const path = join(tempDir(), "plinth.db");
  let t: TestServer;
  let modelId: string;
  let fitId: string;
  afterAll(() => t?.close());

  it("three concurrent Fits with one request_id make one action and one revision", async () => {
    t = await startTestServer({ backend: { path }, plugins: [systest] });
    modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const sendFit = (wait: boolean) => t.engine.fit({ modelId, args: [json(1)], kwargs: { sleep: json(0.2) }, requestId: "fit-1", wait });
    const answers = await Promise.all([sendFit(true), sendFit(false), sendFit(true)]);
    fitId = answers[0]!.action!.id;
    expect(answers.map((a) => a.action!.id)).toEqual([fitId, fitId, fitId]);
    expect(answers[0]!.action!.requestId).toBe("fit-1");
    // Those that wait see it end, as the first does.
    expect([answers[0]!.action!.status, answers[2]!.action!.status]).toEqual([ActionStatus.SUCCEEDED, ActionStatus.SUCCEEDED]);
    expect(await fitsOf(t, modelId)).toEqual({ revision: 2n, recorded: 1, actions: [fitId] });
    // Again once it has ended: its action as it is now, nothing run.
    const again = await t.engine.fit({ modelId, args: [json(1)], kwargs: { sleep: json(0.2) }, requestId: "fit-1" });
    expect(again.action!).toMatchObject({ id: fitId, status: ActionStatus.SUCCEEDED });
  });

  it("refuses the same id with other arguments, naming the action; and an id that is not 1 to 128 printable characters", async () => {
    const other = new RegExp(`request_id "fit-1" started action ${fitId} with other arguments`);
    await expectStatus(t.engine.fit({ modelId, args: [json(2)], requestId: "fit-1" }), Status.ALREADY_EXISTS, other);
    await expectStatus(
      t.engine.predict({ modelId, args: [json(1)], kwargs: { sleep: json(0.2) }, requestId: "fit-1" }),
      Status.ALREADY_EXISTS,
      other,
    );
    for (const requestId of ["x".repeat(129), "tab\there"]) {
      await expectStatus(t.engine.fit({ modelId, args: [json(1)], requestId }), Status.INVALID_ARGUMENT, /^request_id: 1 to 128 printable ASCII/);
    }
    expect(await fitsOf(t, modelId)).toEqual({ revision: 2n, recorded: 1, actions: [fitId] });
  });

  it("answers with the first action after a restart, and frees the id once the history's retention drops it", async () => {
    await t.close();
    t = await startTestServer({ backend: { path }, plugins: [systest] });
    const again = await t.engine.fit({ modelId, args: [json(1)], kwargs: { sleep: json(0.2) }, requestId: "fit-1", wait: true });
    expect(again.action!).toMatchObject({ id: fitId, status: ActionStatus.SUCCEEDED, requestId: "fit-1" });
    expect(await fitsOf(t, modelId)).toEqual({ revision: 2n, recorded: 1, actions: [fitId] });
    await t.engine.predict({ modelId, args: [json(1)], wait: true });
    // Started again keeping one ended action (the predict): the fit is dropped, its id free.
    await t.close();
    t = await startTestServer({ backend: { path, max_actions: 1 }, plugins: [systest] });
    const next = await t.engine.fit({ modelId, args: [json(2)], requestId: "fit-1", wait: true });
    expect(next.action!.id).not.toBe(fitId);
    expect(next.action!.status).toBe(ActionStatus.SUCCEEDED);
    expect(await fitsOf(t, modelId)).toMatchObject({ revision: 3n, recorded: 2 });
  });

  it("the TypeScript client and the command line send it: the CLI's fit answers with the client's action", async () => {
    const client = createPlinthClient(`127.0.0.1:${t.port}`);
    try {
      const { action } = await client.fit(modelId, { args: [3], requestId: "cli-1" }).done;
      expect(action.requestId).toBe("cli-1");
      const bin = inject("cliBundle");
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [bin, "--address", `127.0.0.1:${t.port}`, "fit", modelId, "-a", "3", "--request-id", "cli-1", "-o", "json"],
        { cwd: root },
      );
      expect(JSON.parse(stdout)).toMatchObject({ id: action.id, requestId: "cli-1", status: "ACTION_STATUS_SUCCEEDED" });
      expect(await fitsOf(t, modelId)).toMatchObject({ revision: 4n, recorded: 3 });
    } finally {
      client.close();
    }
  });
});

describe("request_id on the calls that start no action", () => {
  let t: TestServer;
  afterAll(() => t?.close());

  it("AddInstance, UpdateInstance and DeleteModel with one change once; other arguments are refused", async () => {
    t = await startTestServer({ plugins: [systest] });
    const instance = new TextEncoder().encode(JSON.stringify({ args: null, fits: [] }));
    const add = (bytes = instance) => t.engine.addInstance({ modelType: "systest.Model", instance: bytes, requestId: "add-1" });
    const added = await Promise.all([add(), add()]);
    const modelId = added[0]!.model!.id;
    expect(added[1]!.model!.id).toBe(modelId);
    expect((await t.engine.listModels({})).models.map((m) => m.id)).toEqual([modelId]);
    await expectStatus(add(new Uint8Array([1])), Status.ALREADY_EXISTS, new RegExp(`request_id "add-1" was used by AddInstance of model ${modelId}`));

    const update = () => t.engine.updateInstance({ modelId, instance, requestId: "update-1" });
    const updated = await Promise.all([update(), update()]);
    expect(updated.map((u) => u.model!.revision)).toEqual([2n, 2n]);
    expect((await update()).model!.revision).toBe(2n);
    expect((await t.engine.getModel({ modelId })).model!.revision).toBe(2n);

    const remove = () => t.engine.deleteModel({ modelId, requestId: "delete-1" });
    await Promise.all([remove(), remove()]);
    await remove();
    await expectStatus(t.engine.deleteModel({ modelId }), Status.NOT_FOUND, /not found/);
    await expectStatus(t.engine.deleteModel({ modelId: "m-other", requestId: "delete-1" }), Status.ALREADY_EXISTS, /DeleteModel of model/);
  });
});

describe("request_id in a PostgreSQL cluster", () => {
  it("the same id on two servers at once makes one action", async () => {
    const url = await newDatabase();
    const a = await startTestServer({ backend: { kind: "postgres", url }, plugins: [systest] });
    const b = await startTestServer({ backend: { kind: "postgres", url }, plugins: [systest] });
    try {
      const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
      const sendFit = (t: TestServer) => t.engine.fit({ modelId, args: [json(1)], requestId: "fit-1", wait: true });
      const [onA, onB] = await Promise.all([sendFit(a), sendFit(b)]);
      expect(onB.action!.id).toBe(onA.action!.id);
      expect([onA.action!.status, onB.action!.status]).toEqual([ActionStatus.SUCCEEDED, ActionStatus.SUCCEEDED]);
      expect(await fitsOf(b, modelId)).toEqual({ revision: 2n, recorded: 1, actions: [onA.action!.id] });
    } finally {
      // Both servers' children are this process's: the check for children left comes at the last close.
      a.channel.close();
      await a.server.close();
      await b.close();
    }
  });
});
