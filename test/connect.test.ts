/**
 * The HTTP listener: the same services over Connect (JSON, as curl sends it) and
 * gRPC-Web, through the same call stack as the gRPC port.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { ChangeKind, StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { TestCa } from "./helpers/certs.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(server: Record<string, unknown> = {}) {
  t = await startTestServer({
    http: { address: "127.0.0.1:0" },
    server,
    engine: { sigterm_timeout: 1 },
    plugins: [{ module: join(root, "plugins/system-test/mod.ts") }],
  });
  return `http://127.0.0.1:${t.server.httpPort}`;
}

/** A Connect unary call as curl makes it: POST, JSON body, JSON answer. */
async function post(base: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${base}/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: the answers are JSON, read as the test expects them
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

describe("Connect and gRPC-Web on http.address", () => {
  it("answers every unary method as JSON, as curl calls it", async () => {
    const base = await start();
    const e = (method: string, body: unknown) => post(base, `plinth.v1.EngineService/${method}`, body);
    const a = (method: string, body: unknown) => post(base, `plinth.v1.ActionService/${method}`, body);

    expect((await e("ListPlugins", {})).body.plugins.map((p: { name: string }) => p.name)).toEqual(["systest"]);
    const created = await e("CreateInstance", { model_type: "systest.Model", args: [{ json: "a" }], wait: true });
    expect(created.status).toBe(200);
    expect(created.body.action.status).toBe("ACTION_STATUS_SUCCEEDED");
    const modelId = created.body.action.modelId as string;
    const fitted = await e("Fit", { model_id: modelId, args: [{ json_text: "[1,2,3]" }], wait: true });
    expect(fitted.body.action.result.model.revision).toBe("2");
    const predicted = await e("Predict", { model_id: modelId, args: [{ json: 42 }], wait: true });
    expect(predicted.body.action.result.prediction.json.args).toEqual([42]);
    expect((await e("GetModel", { model_id: modelId })).body.model.revision).toBe("2");
    expect((await e("ListModels", {})).body.models.map((m: { id: string }) => m.id)).toEqual([modelId]);
    const instance = Buffer.from(JSON.stringify({ args: {}, fits: [] })).toString("base64");
    const added = (await e("AddInstance", { model_type: "systest.Model", instance })).body.model;
    expect((await e("UpdateInstance", { model_id: added.id, instance })).body.model.revision).toBe("2");
    expect((await e("DeleteModel", { model_id: added.id })).status).toBe(200);

    const actionId = predicted.body.action.id as string;
    expect((await a("GetAction", { action_id: actionId })).body.action.status).toBe("ACTION_STATUS_SUCCEEDED");
    expect((await a("ListActions", { model_id: modelId })).body.actions).toHaveLength(3);
    expect((await a("WaitAction", { action_id: actionId })).body.action.id).toBe(actionId);
    const running = (await e("Fit", { model_id: modelId, kwargs: { sleep: { json: 30 } } })).body.action.id as string;
    const cancelled = await a("CancelAction", { action_id: running });
    expect(cancelled.body.action.status).toBe("ACTION_STATUS_CANCELLED");
    expect(cancelled.body.action.cancel.by).toBe("CancelAction");
    const state = await post(base, "plinth.v1.StateService/GetState", {});
    expect(state.body.state.models.map((m: { id: string }) => m.id)).toEqual([modelId]);
  });

  it("streams WatchAction and WatchState over Connect and over gRPC-Web", async () => {
    const base = await start();
    for (const transport of [
      createConnectTransport({ baseUrl: base, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }),
    ]) {
      const actions = createClient(ActionService, transport);
      const state = createClient(StateService, transport);
      // Long enough to be running when the watch starts, however busy the machine: cancelled once seen running.
      const { action } = await post(base, "plinth.v1.EngineService/CreateInstance", {
        model_type: "systest.Model",
        kwargs: { sleep: { json: 60 } },
      }).then((r) => r.body as { action: { id: string } });
      const statuses: ActionStatus[] = [];
      for await (const update of actions.watchAction({ actionId: action.id })) {
        statuses.push(update.action!.status);
        if (update.action!.status === ActionStatus.EXECUTING && update.action!.state) await actions.cancelAction({ actionId: action.id });
      }
      expect(statuses.at(-1)).toBe(ActionStatus.CANCELLED);
      expect(statuses).toContain(ActionStatus.EXECUTING);
      const controller = new AbortController();
      const stream = state.watchState({}, { signal: controller.signal })[Symbol.asyncIterator]();
      const first = await stream.next();
      expect(first.value!.event.case).toBe("snapshot");
      controller.abort();
    }
  });

  it("a Connect stream: its request may come gzipped, its deadline ends it with deadline_exceeded, a broken envelope is invalid_argument", async () => {
    const base = await start();
    const gzipped = createClient(
      StateService,
      createConnectTransport({ baseUrl: base, httpVersion: "1.1", sendCompression: compressionGzip, compressMinBytes: 0 }),
    );
    const controller = new AbortController();
    const first = await gzipped
      .watchState({ kinds: [ChangeKind.ACTION_UPSERTED] }, { signal: controller.signal })
      [Symbol.asyncIterator]()
      .next();
    expect(first.value!.event.case).toBe("snapshot");
    controller.abort();
    // Raw, so that what ends the stream is the server's answer, not the client's own timer.
    const stream = async (headers: Record<string, string>, body: Uint8Array) => {
      const response = await fetch(`${base}/plinth.v1.StateService/WatchState`, {
        method: "POST",
        headers: { "content-type": "application/connect+json", ...headers },
        body,
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const frames: { flags: number; text: string }[] = [];
      for (let at = 0; at + 5 <= bytes.length; ) {
        const length = new DataView(bytes.buffer, at + 1, 4).getUint32(0);
        frames.push({ flags: bytes[at]!, text: new TextDecoder().decode(bytes.subarray(at + 5, at + 5 + length)) });
        at += 5 + length;
      }
      return { status: response.status, frames };
    };
    const envelope = (json: string) => Buffer.concat([Buffer.from([0, 0, 0, 0, json.length]), Buffer.from(json)]);
    const timedOut = await stream({ "connect-timeout-ms": "200" }, envelope("{}"));
    expect(timedOut.frames[0]!.text).toContain('"snapshot"');
    expect(JSON.parse(timedOut.frames.at(-1)!.text)).toMatchObject({ error: { code: "deadline_exceeded" } });
    const broken = await stream({}, Buffer.from([0, 0, 0, 0, 9, 0x7b]));
    expect(broken.status).toBe(200);
    expect(JSON.parse(broken.frames.at(-1)!.text)).toMatchObject({ error: { code: "invalid_argument" } });
    const unknownField = await stream({}, envelope('{"kindz": []}'));
    expect(JSON.parse(unknownField.frames.at(-1)!.text)).toMatchObject({
      error: { code: "invalid_argument", message: expect.stringContaining("kindz") },
    });
  });

  it("a Connect watcher gets the latest version of a model changed many times at once, not each version", async () => {
    const base = await start();
    const modelId = (await t!.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const state = createClient(StateService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const controller = new AbortController();
    const stream = state.watchState({ kinds: [ChangeKind.MODEL_UPSERTED] }, { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value!.event.case).toBe("snapshot");
    // 100 changes the server makes at once (in-process, in one turn of its event loop).
    const instance = new TextEncoder().encode(JSON.stringify({ args: "x", fits: [] }));
    const engine = t!.server.engine;
    await Promise.all(Array.from({ length: 100 }, () => engine.updateInstance(modelId, instance)));
    const revisions: bigint[] = [];
    while (revisions.at(-1) !== 101n) {
      const { value } = await stream.next();
      if (value!.event.case === "modelUpserted") revisions.push(value!.event.value.revision);
    }
    controller.abort();
    // What was on its way when they came, then the latest (before, dozens of the 100 came).
    expect(revisions.length).toBeLessThanOrEqual(3);
  });

  it("answers bad input with the Connect error JSON, an unknown path with 404, and applies the same auth as the gRPC port", async () => {
    const token = "0123456789abcdef0123456789abcdef";
    const base = await start({
      auth: { tokens: [{ name: "reader", sha256: createHash("sha256").update(token).digest("hex"), roles: ["read"] }] },
    });
    const bearer = { authorization: `Bearer ${token}` };
    const malformed = await post(base, "plinth.v1.EngineService/ListModels", "{nope", bearer);
    expect(malformed.status).toBe(400);
    expect(malformed.body.code).toBe("invalid_argument");
    const missing = await post(base, "plinth.v1.EngineService/GetModel", { model_id: "m-none" }, bearer);
    expect(missing).toEqual({ status: 404, body: { code: "not_found", message: "model m-none not found" } });
    const anonymous = await post(base, "plinth.v1.EngineService/ListModels", {});
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.code).toBe("unauthenticated");
    const denied = await post(base, "plinth.v1.EngineService/CreateInstance", { model_type: "systest.Model" }, bearer);
    expect(denied.status).toBe(403);
    expect(denied.body.message).toBe("/plinth.v1.EngineService/CreateInstance needs the run role; reader has read");
    expect((await post(base, "plinth.v1.EngineService/ListModels", {}, bearer)).status).toBe(200);
    const unknown = await fetch(`${base}/no/such/path`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { message: string }).message).toContain("no such path: /no/such/path");
  });

  it("serves HTTPS with the gRPC port's certificate, where a peer-subject header proves nothing", async () => {
    const ca = new TestCa("Plinth connect CA");
    const pair = ca.server();
    await start({
      tls: { cert: pair.cert, key: pair.key, client_ca: ca.ca },
      auth: { certificates: [{ subject: "CN=admin-bot", roles: ["admin"] }] },
    });
    const call = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpsRequest(
          {
            host: "localhost",
            port: t!.server.httpPort,
            path: "/plinth.v1.EngineService/ListModels",
            method: "POST",
            ca: readFileSync(ca.ca),
            headers: { "content-type": "application/json", ...headers },
          },
          (res) => {
            let body = "";
            res.on("data", (chunk: Buffer) => (body += chunk.toString()));
            res.on("end", () => resolve({ status: res.statusCode!, body }));
          },
        );
        req.on("error", reject);
        req.end("{}");
      });
    const forged = await call({ "plinth-peer-subject": "admin-bot" });
    expect(forged.status).toBe(401);
    expect(JSON.parse(forged.body).code).toBe("unauthenticated");
  });
});
