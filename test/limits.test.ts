import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { dataAccess, json } from "./helpers/args.ts";
import { startPayloadServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";
import { tempDir } from "./helpers/temp.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(engine: Record<string, unknown> = {}, backend?: Record<string, unknown>) {
  const started = await startPayloadServer(engine, backend);
  t = started.t;
  return { t: started.t, modelId: started.echo };
}

const actionsOn = async (modelId: string) => (await t!.actions.listActions({ modelId })).actions.length;

describe("limits answer INVALID_ARGUMENT naming the limit and the value", () => {
  it("1,000 data-access kwargs are refused at once; no action is created", async () => {
    const { t, modelId } = await start();
    const before = await actionsOn(modelId);
    const kwargs = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${i}`, dataAccess("payloads.echo", [json(i)])]));
    // Refused when the count passes the limit (k256, the 257th), before any action exists:
    // no data access ran.
    await expectStatus(
      t.engine.predict({ modelId, kwargs }),
      Status.INVALID_ARGUMENT,
      /^argument kwargs\.k256: more than 256 data-access arguments; engine\.max_data_access allows 256 per request$/,
    );
    expect(await actionsOn(modelId)).toBe(before);
  });

  it("too many args or kwargs, and data access nested too deep", async () => {
    const { t, modelId } = await start({ max_args: 3, max_kwargs: 2, max_data_access_depth: 2 });
    await expectStatus(
      t.engine.predict({ modelId, args: [json(1), json(2), json(3), json(4)] }),
      Status.INVALID_ARGUMENT,
      /^the request has 4 args; engine\.max_args allows 3$/,
    );
    await expectStatus(
      t.engine.predict({ modelId, kwargs: { a: json(1), b: json(2), c: json(3) } }),
      Status.INVALID_ARGUMENT,
      /^the request has 3 kwargs; engine\.max_kwargs allows 2$/,
    );
    const deep = dataAccess("payloads.echo", [dataAccess("payloads.echo", [dataAccess("payloads.echo", [json(1)])])]);
    await expectStatus(
      t.engine.predict({ modelId, args: [deep] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\]\.args\[0\]\.args\[0\]: data access nests 3 deep; engine\.max_data_access_depth allows 2$/,
    );
    // Within the limits, the same shapes run.
    const ok = (await t.engine.predict({ modelId, args: [dataAccess("payloads.echo", [dataAccess("payloads.echo", [json(7)])])], wait: true }))
      .action!;
    expect(ok.status).toBe(ActionStatus.SUCCEEDED);
  });

  it("data-access work counts against max_queue", async () => {
    const { t } = await start({ max_children: 1, max_queue: 3, min_idle_workers: 0 });
    const numbersModel = (await t.engine.createInstance({ modelType: "payloads.Numbers", wait: true })).action!.modelId;
    // One action holds the only child...
    const busy = (await t.engine.predict({ modelId: numbersModel, kwargs: { sleep: json(60) } })).action!;
    await watchActions(t, (v) => v.get(busy.id)?.status === ActionStatus.EXECUTING);
    // ...so three with data access wait for theirs: the queue is full.
    const models: string[] = [];
    for (let i = 0; i < 4; i++)
      models.push((await t.engine.addInstance({ modelType: "payloads.Echo", instance: new TextEncoder().encode("{}") })).model!.id);
    const waiting: string[] = [];
    for (const id of models.slice(0, 3))
      waiting.push((await t.engine.predict({ modelId: id, args: [dataAccess("payloads.numbers", [json(3)])] })).action!.id);
    await watchActions(t, (v) => waiting.every((id) => v.get(id)?.status === ActionStatus.ACCESSING_DATA));
    await expectStatus(
      t.engine.predict({ modelId: models[3]!, args: [dataAccess("payloads.numbers", [json(3)])] }),
      Status.RESOURCE_EXHAUSTED,
      /^the queue is full: 3 actions are waiting \(queued or accessing data\) and engine\.max_queue is 3; retry later$/,
    );
    await Promise.all([busy.id, ...waiting].map((actionId) => t.actions.cancelAction({ actionId })));
  });

  it("a request that does not decode is INVALID_ARGUMENT, not INTERNAL", async () => {
    const { t } = await start();
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const error = await new Promise<grpc.ServiceError>((resolve) =>
      client.makeUnaryRequest(
        "/plinth.v1.EngineService/Predict",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0x0a, 0xff, 0x01]), // field 1, length 255, then one byte
        (e) => resolve(e!),
      ),
    );
    client.close();
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^the request is not a valid plinth\.v1\.PredictRequest: /);
  });

  it("revisions from 2^63 up and oversized filter lists", async () => {
    const { t, modelId } = await start();
    await expectStatus(
      t.engine.getModel({ modelId, revision: 2n ** 63n }),
      Status.INVALID_ARGUMENT,
      /^revision: must be below 2\^63, got 9223372036854775808$/,
    );
    const watch = async (request: Parameters<typeof t.state.watchState>[0]) => {
      for await (const _ of t.state.watchState(request)) break;
    };
    await expectStatus(watch({ fromRevision: 2n ** 64n - 1n }), Status.INVALID_ARGUMENT, /^from_revision: must be below 2\^63/);
    await expectStatus(
      watch({ modelIds: Array.from({ length: 1001 }, (_, i) => `m-${i}`) }),
      Status.INVALID_ARGUMENT,
      /^model_ids: at most 1000 entries, got 1001; watch without the filter instead$/,
    );
  });

  it("a Duration outside the protobuf spec is refused, and no action is created", async () => {
    const { t, modelId } = await start();
    const before = await actionsOn(modelId);
    for (const timeout of [
      { seconds: 1n, nanos: 2_000_000_000 },
      { seconds: 1n, nanos: -5 },
      { seconds: 400_000_000_000n, nanos: 0 },
    ]) {
      await expectStatus(t.engine.predict({ modelId, timeout }), Status.INVALID_ARGUMENT, /^timeout: not a valid google\.protobuf\.Duration/);
    }
    expect(await actionsOn(modelId)).toBe(before);
  });

  it("json_text that is not JSON is refused, quoting at most 200 characters of it", async () => {
    const { t, modelId } = await start();
    const garbage = `{not json${"x".repeat(10_000)}`;
    const details = await expectStatus(
      t.engine.predict({ modelId, args: [{ kind: { case: "jsonText", value: garbage } }] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\]: json_text is not valid JSON \(.+\): "\{not jsonx+…"$/,
    );
    expect(details.length).toBeLessThan(400);
    // Every message that quotes input cuts it.
    const long = "y".repeat(5000);
    for (const call of [t.engine.createInstance({ modelType: long }), t.engine.predict({ modelId: long }), t.actions.getAction({ actionId: long })]) {
      const message = await call.then(
        () => "",
        (e: { details: string }) => e.details,
      );
      expect(message.length).toBeGreaterThan(0);
      expect(message.length).toBeLessThan(500);
    }
  });

  it("a store write that fails fails the action visibly, and the history is left as it was", async () => {
    const dir = tempDir("plinth-store-");
    const path = join(dir, "plinth.db");
    const { t } = await start({}, { path });
    const numbersModel = (await t.engine.createInstance({ modelType: "payloads.Numbers", wait: true })).action!.modelId;
    const { action } = await t.engine.predict({ modelId: numbersModel, kwargs: { sleep: json(0.5), n: json(3) } });
    await watchActions(t, (v) => v.get(action!.id)?.status === ActionStatus.EXECUTING);
    // Another writer holds the database: the action's last write times out (SQLITE_BUSY).
    const other = new Database(path);
    other.exec("BEGIN EXCLUSIVE");
    try {
      const ended = (await t.actions.waitAction({ actionId: action!.id })).action!;
      expect(ended.status).toBe(ActionStatus.FAILED);
      expect(ended.error).toMatchObject({ code: "store_failed", message: expect.stringMatching(/^the store could not record the action: /) });
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    // A new action while the store works again: recorded as usual.
    const next = (await t.engine.predict({ modelId: numbersModel, kwargs: { n: json(2) }, wait: true })).action!;
    expect(next.status).toBe(ActionStatus.SUCCEEDED);
  });
});
