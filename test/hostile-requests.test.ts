/**
 * Requests an attacker or a broken client sends, on both listeners: none ends the server,
 * none is decoded before its caller is known, none may hold more than the server will
 * decode, and each is answered with the status that says what is wrong.
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { ActionCall, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService, PredictRequestSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { expectStatus } from "./helpers/status.ts";
import { tempDir } from "./helpers/temp.ts";

let t: TestServer | undefined;
const processes: ServerProcess[] = [];
afterEach(async () => {
  await t?.close();
  t = undefined;
  for (const p of processes.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGTERM");
      await once(p.child, "exit");
    }
  }
});

const TOKEN = "a-token-of-the-operator-0123456789";
const sha256 = async (text: string) => Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))).toString("hex");

async function start(server: Record<string, unknown> = {}, engine: Record<string, unknown> = {}) {
  t = await startTestServer({
    http: { address: "127.0.0.1:0" },
    server,
    engine: { sigterm_timeout: 1, ...engine },
    plugins: [{ module: `${root}/plugins/system-test/mod.ts` }],
  });
  return { t, base: `http://127.0.0.1:${t.server.httpPort}` };
}

async function withAuth(limits: Record<string, unknown> = {}) {
  return start({ auth: { tokens: [{ name: "ops", sha256: await sha256(TOKEN), roles: ["admin"] }] }, limits });
}

/** One raw HTTP/1.1 exchange: what a hand-made client sends, not what fetch would normalise. */
async function raw(port: number, request: string | Buffer): Promise<{ status: number; text: string }> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.write(request);
  let text = "";
  socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
  await Promise.race([once(socket, "close"), once(socket, "end")]);
  socket.destroy();
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text };
}

/** A unary call with any bytes as its request, as a broken or hostile gRPC client sends them. */
function grpcBytes(port: number, path: string, body: Buffer, metadata = new grpc.Metadata()) {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise<{ code: number; details: string }>((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      metadata,
      (error) => {
        client.close();
        resolve({ code: error?.code ?? Status.OK, details: error?.details ?? "" });
      },
    );
  });
}

/** A PredictRequest whose one `json` argument is a list of `n` numbers. */
function manyNumbers(n: number) {
  const values = Array.from({ length: n }, (_, i) => create(ValueSchema, { kind: { case: "numberValue", value: i } }));
  return create(PredictRequestSchema, {
    modelId: "m-none",
    args: [{ kind: { case: "json", value: create(ValueSchema, { kind: { case: "listValue", value: { values } } }) } }],
  });
}

describe("no HTTP request ends the server", () => {
  it("malformed paths of every kind are answered 400 or 404 and the server goes on serving", async () => {
    const dir = tempDir();
    const p = startBundledProcess([
      "--config",
      writeConfig(`backend:\n  path: ${dir}/plinth.db\nhttp:\n  address: 127.0.0.1:0\nplugins:\n  - module: ${fixture("misbehave.ts")}\n`, dir),
      "--address",
      "127.0.0.1:0",
    ]);
    processes.push(p);
    await p.port;
    const port = Number(/"http":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(p.output())![1]);
    const get = (path: string) => raw(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    const answers: Record<string, number> = {};
    for (const path of [
      "/%ff",
      "/%",
      "/%E0%A4%A",
      "/assets/%c0%ae%c0%ae/package.json",
      "/a%00b",
      "/%2e%2e/%2e%2e/etc/passwd",
      "/../../package.json",
      "/assets/..%2f..%2fpackage.json",
      `/${"x".repeat(8000)}`,
      `/plinth.v1.EngineService/ListPlugins%ff`,
    ]) {
      answers[path.slice(0, 40)] = (await get(path)).status;
    }
    for (const [path, status] of Object.entries(answers)) expect([path, [400, 404]]).toEqual([path, expect.arrayContaining([status])]);
    // A request line with a NUL, and an RPC without a Host header: Node's parser or ours says 400.
    expect((await raw(port, "GET /\0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).status).toBe(400);
    expect(
      (await raw(port, "POST /plinth.v1.EngineService/ListPlugins HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")).status,
    ).toBe(400);
    // Still serving, and nothing of the package leaked.
    const plugins = await fetch(`http://127.0.0.1:${port}/plinth.v1.EngineService/ListPlugins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(plugins.status).toBe(200);
    expect(p.child.exitCode).toBeNull();
    expect(p.output()).not.toContain("Unhandled");
  });

  it("a 404 quotes at most 200 characters of the path", async () => {
    const { base } = await start();
    const response = await fetch(`${base}/${"y".repeat(15_000)}`);
    expect(response.status).toBe(404);
    const body = (await response.json()) as { code: string; message: string };
    expect(body.code).toBe("not_found");
    expect(body.message.length).toBeLessThan(600);
    expect(body.message).toContain("/plinth.v1.EngineService/<Method>");
  });

  it("curl without a content-type gets a 415 that says what to send", async () => {
    const { base } = await start();
    const response = await fetch(`${base}/plinth.v1.EngineService/ListPlugins`, { method: "POST", body: "{}" });
    expect(response.status).toBe(415);
    const body = (await response.json()) as { message: string };
    expect(body.message).toMatch(/content-type: application\/json/);
  });
});

describe("the caller is known before a request is decoded", () => {
  it("Connect: a request without a token is refused on its headers, before its body has even been sent", async () => {
    const { base } = await withAuth();
    const url = new URL(base);
    const socket = connect(Number(url.port), "127.0.0.1");
    await once(socket, "connect");
    // Headers announcing 64 MiB, and only the first bytes of the body.
    socket.write(
      "POST /plinth.v1.EngineService/Predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n",
    );
    socket.write(`{"model_id": "m-x", "args": [{"json": [${"1,".repeat(1000)}`);
    const [chunk] = (await once(socket, "data")) as [Buffer];
    socket.destroy();
    const text = chunk.toString();
    expect(text).toMatch(/^HTTP\/1\.1 401/);
    expect(text).toContain("needs a token");
  });

  it("gRPC: bytes that do not decode, sent without a token, are UNAUTHENTICATED (never decoded); with one, INVALID_ARGUMENT", async () => {
    const { t } = await withAuth();
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    expect(await grpcBytes(t.port, "/plinth.v1.EngineService/Predict", garbage)).toEqual({
      code: Status.UNAUTHENTICATED,
      details: expect.stringContaining("needs a token"),
    });
    const authorized = new grpc.Metadata();
    authorized.set("authorization", `Bearer ${TOKEN}`);
    expect(await grpcBytes(t.port, "/plinth.v1.EngineService/Predict", garbage, authorized)).toEqual({
      code: Status.INVALID_ARGUMENT,
      details: expect.stringContaining("not a valid plinth.v1.PredictRequest"),
    });
  });
});

describe("what one request may make the server decode", () => {
  it("a request with more values than server.limits.max_request_values is refused by gRPC and Connect alike, naming the key", async () => {
    const { t, base } = await withAuth({ max_request_values: 1000 });
    const authorized = new grpc.Metadata();
    authorized.set("authorization", `Bearer ${TOKEN}`);
    const over = Buffer.from(toBinary(PredictRequestSchema, manyNumbers(1000)));
    expect(await grpcBytes(t.port, "/plinth.v1.EngineService/Predict", over, authorized)).toEqual({
      code: Status.INVALID_ARGUMENT,
      details: expect.stringMatching(/more than 1000 values \(server\.limits\.max_request_values\).*json_text/),
    });
    // Within the limit, the request reaches the engine (which does not know the model).
    const within = Buffer.from(toBinary(PredictRequestSchema, manyNumbers(900)));
    expect((await grpcBytes(t.port, "/plinth.v1.EngineService/Predict", within, authorized)).code).toBe(Status.NOT_FOUND);

    const headers = { authorization: `Bearer ${TOKEN}` };
    const json = createClient(EngineService, createConnectTransport({ baseUrl: base, httpVersion: "1.1", useBinaryFormat: false }));
    const binary = createClient(EngineService, createConnectTransport({ baseUrl: base, httpVersion: "1.1", useBinaryFormat: true }));
    for (const client of [json, binary]) {
      const error = await client.predict(manyNumbers(1000), { headers }).catch((e: unknown) => ConnectError.from(e));
      expect(error).toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringContaining("server.limits.max_request_values") });
    }
    // A million numbers as curl would send them: refused the same way.
    const million = `{"model_id": "m-none", "args": [{"json": [${"1,".repeat(999_999)}1]}]}`;
    const response = await fetch(`${base}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: million,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { message: string }).message).toContain("server.limits.max_request_values");
  });

  it("a request nested deeper than protobuf's limit is refused, not left to blow the stack", async () => {
    const { base } = await start();
    const deep = `{"model_id": "m-none", "args": [{"json": ${"[".repeat(5000)}${"]".repeat(5000)}}]}`;
    const response = await fetch(`${base}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: deep,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { message: string }).message).toMatch(/nests deeper than 100 levels/);
  });
});

describe("bad values get INVALID_ARGUMENT naming what is wrong", () => {
  it("NaN, ±Infinity and an empty value in a json argument", async () => {
    const { t, base } = await start();
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const response = await fetch(`${base}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"model_id": "${modelId}", "args": [{"json": 1}, {"json": [1e999]}]}`,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { message: string }).message).toMatch(/^argument args\[1\]: json cannot hold NaN or ±Infinity/);
    const nan = create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } });
    await expectStatus(
      t.engine.predict({ modelId, kwargs: { x: { kind: { case: "json", value: nan } } } }),
      Status.INVALID_ARGUMENT,
      /^argument kwargs\.x: json cannot hold NaN/,
    );
    await expectStatus(
      t.engine.predict({ modelId, args: [{ kind: { case: "json", value: create(ValueSchema) } }] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\]: json holds an empty value/,
    );
  });

  it("json_text that is not JSON: refused at once when small; over 1 MiB (not parsed on the server) the action fails naming it", async () => {
    const { t } = await start();
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    await expectStatus(
      t.engine.predict({ modelId, args: [{ kind: { case: "jsonText", value: "[1, 2" } }] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\]: json_text is not valid JSON/,
    );
    const large = `[${"1,".repeat(600_000)}`;
    const { action } = await t.engine.predict({ modelId, args: [{ kind: { case: "jsonText", value: large } }], wait: true });
    expect(action!.status).toBe(ActionStatus.FAILED);
    expect(action!.error).toMatchObject({
      code: "invalid_argument",
      message: expect.stringMatching(/^argument args\[0\]: json_text is not valid JSON/),
    });
  });

  it("bytes that are not the request's message on the HTTP listener, and garbage to health and reflection", async () => {
    const { t, base } = await start();
    const response = await fetch(`${base}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe("invalid_argument");
    // A tag with wire type 7, which no protobuf decoder takes.
    expect(await grpcBytes(t.port, "/grpc.health.v1.Health/Check", Buffer.from([0x0f]))).toEqual({
      code: Status.INVALID_ARGUMENT,
      details: expect.stringContaining("not a valid request of /grpc.health.v1.Health/Check"),
    });
  });

  it("a misspelled enum or field name over Connect JSON, and a page token no list returned", async () => {
    const { t, base } = await start();
    const post = (method: string, body: unknown) =>
      fetch(`${base}/plinth.v1.ActionService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const misspelled = await post("ListActions", { statuses: ["ACTION_STATUS_FAILD"] });
    expect(misspelled.status).toBe(400);
    expect(((await misspelled.json()) as { message: string }).message).toContain("ACTION_STATUS_FAILD");
    expect((await post("ListActions", { model_idd: "m-x" })).status).toBe(400);
    await expectStatus(t.actions.listActions({ pageToken: "garbage" }), Status.INVALID_ARGUMENT, /page_token: not one ListActions returned/);
    await expectStatus(t.engine.listModels({ pageToken: "garbage" }), Status.INVALID_ARGUMENT, /page_token: not one ListModels returned/);
    await expectStatus(
      t.actions.listActions({ calls: [9 as ActionCall] }),
      Status.INVALID_ARGUMENT,
      /calls: create, fit or predict \(1 to 3\), got 9/,
    );
    await expectStatus(t.actions.listActions({ modelType: "x".repeat(300) }), Status.INVALID_ARGUMENT, /model_type: at most 256 characters, got 300/);
  });

  it("a Connect deadline shorter than a wait is DEADLINE_EXCEEDED, as the server answers it", async () => {
    const { t, base } = await start();
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    // The deadline in the header only (as any Connect client sends it), so that the answer is the server's own.
    const response = await fetch(`${base}/plinth.v1.EngineService/Fit`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "300" },
      body: JSON.stringify({ model_id: modelId, kwargs: { sleep: { json: 30 } }, wait: true }),
    });
    expect(((await response.json()) as { code: string }).code).toBe("deadline_exceeded");
    const actions = createClient(ActionService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const [running] = (await actions.listActions({ modelId })).actions.filter((a) => a.call === ActionCall.FIT);
    await actions.cancelAction({ actionId: running!.id });
  });
});

describe("streams one anonymous client may hold", () => {
  it("Connect watchers, each on a connection of its own, are bounded per address: the one past streams_per_caller is refused", async () => {
    const { base } = await start({ limits: { streams_per_caller: 3 } });
    const state = createClient(StateService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const watchers = Array.from({ length: 3 }, () => new AbortController());
    const streams = watchers.map((w) => state.watchState({}, { signal: w.signal })[Symbol.asyncIterator]());
    // Each has its snapshot: all three are open.
    for (const stream of streams) expect((await stream.next()).value?.event.case).toBe("snapshot");
    const fourth = await state
      .watchState({})
      [Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => ConnectError.from(e));
    expect(fourth).toMatchObject({
      code: Code.ResourceExhausted,
      rawMessage: expect.stringMatching(/^address 127\.0\.0\.1 has 3 open streams; server\.limits\.streams_per_caller allows 3$/),
    });
    // One closes: another may open.
    watchers[0]!.abort();
    await streams[0]!.next().catch(() => undefined);
    const again = new AbortController();
    let opened: unknown;
    for (;;) {
      opened = await state
        .watchState({}, { signal: again.signal })
        [Symbol.asyncIterator]()
        .next()
        .catch((e: unknown) => ConnectError.from(e));
      // The server notices the closed connection at its own pace.
      if (!(opened instanceof ConnectError)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((opened as { value?: { event: { case: string } } }).value?.event.case).toBe("snapshot");
    again.abort();
    for (const w of watchers) w.abort();
  });
});

describe("connections that never speak", () => {
  it("a TCP connection to the gRPC port that never sends the HTTP/2 preface is closed", async () => {
    const { t } = await start({ limits: { keepalive_seconds: 0.5 } });
    const socket: Socket = connect(t.port, "127.0.0.1");
    await once(socket, "connect");
    socket.resume(); // read what the server sends (its settings and pings), answer nothing
    await once(socket, "close");
    expect(socket.destroyed).toBe(true);
  });
});
