/**
 * Who may call what: bearer tokens and roles on every RPC (table-driven), who started
 * and who cancelled each action, the audit log, per-caller limits, and what plugin
 * children can see of the server.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type DescService, toJsonString } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Status } from "nice-grpc";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ActionSchema, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { clientsOf, fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";
import { tempDir } from "./helpers/temp.ts";

const token = (name: string) => `${name}-${randomBytes(16).toString("hex")}`;
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

const tokens = { read: token("reader"), readAll: token("auditor"), run: token("runner"), admin: token("ops"), expired: token("old") };
const auth = {
  tokens: [
    { name: "reader", sha256: sha256(tokens.read), roles: ["read"] },
    { name: "auditor", sha256: sha256(tokens.readAll), roles: ["read_all"] },
    { name: "runner", sha256: sha256(tokens.run), roles: ["run"] },
    { name: "ops", sha256: sha256(tokens.admin), roles: ["admin"] },
    { name: "old", sha256: sha256(tokens.expired), roles: ["admin"], expires: "2020-01-01T00:00:00Z" },
  ],
};

const servers: TestServer[] = [];
async function start(config: Record<string, unknown>, options: Parameters<typeof startTestServer>[1] = {}) {
  const t = await startTestServer(config, options);
  servers.push(t);
  return t;
}
afterEach(async () => {
  await Promise.all(servers.splice(0).map((t) => t.close()));
});

/** The role each method needs, as the README states it; "open": none, health being open by default. */
const needed: Record<string, "read" | "run" | "admin" | "open"> = {
  "/plinth.v1.EngineService/ListModels": "read",
  "/plinth.v1.EngineService/GetModel": "read",
  "/plinth.v1.EngineService/ListPlugins": "read",
  "/plinth.v1.EngineService/CreateInstance": "run",
  "/plinth.v1.EngineService/AddInstance": "admin",
  "/plinth.v1.EngineService/UpdateInstance": "admin",
  "/plinth.v1.EngineService/DeleteModel": "admin",
  "/plinth.v1.EngineService/Fit": "run",
  "/plinth.v1.EngineService/Predict": "run",
  "/plinth.v1.ActionService/GetAction": "read",
  "/plinth.v1.ActionService/ListActions": "read",
  "/plinth.v1.ActionService/WaitAction": "read",
  "/plinth.v1.ActionService/CancelAction": "run",
  "/plinth.v1.ActionService/WatchAction": "read",
  "/plinth.v1.StateService/GetState": "read",
  "/plinth.v1.StateService/WatchState": "read",
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "read",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "read",
  "/grpc.health.v1.Health/Check": "open",
  "/grpc.health.v1.Health/Watch": "open",
};
const RANK = { read: 1, run: 2, admin: 3 } as const;

type Kind = "unary" | "server_streaming" | "bidi_streaming";
const methods: [string, Kind][] = [
  ...[EngineService, ActionService, StateService].flatMap((s: DescService) =>
    s.methods.map((m): [string, Kind] => [`/${s.typeName}/${m.name}`, m.methodKind as Kind]),
  ),
  ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "bidi_streaming"],
  ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "bidi_streaming"],
  ["/grpc.health.v1.Health/Check", "unary"],
  ["/grpc.health.v1.Health/Watch", "server_streaming"],
];

/** A list_services reflection request; every other method gets an empty message. */
const LIST_SERVICES = Buffer.from([0x3a, 0x00]);
const bytes = (b: Buffer) => b;

/** Calls `path` with raw bytes, as any client would: the status it ends with (OK once a stream yields). */
function rawCall(client: grpc.Client, path: string, kind: Kind, metadata: grpc.Metadata): Promise<{ code: grpc.status; details: string }> {
  const options = { deadline: Date.now() + 20_000 };
  return new Promise((resolve) => {
    const done = (error: grpc.ServiceError | null) => resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? "" });
    if (kind === "unary") {
      client.makeUnaryRequest(path, bytes, bytes, Buffer.alloc(0), metadata, options, done);
      return;
    }
    const call =
      kind === "server_streaming"
        ? client.makeServerStreamRequest(path, bytes, bytes, Buffer.alloc(0), metadata, options)
        : client.makeBidiStreamRequest(path, bytes, bytes, metadata, options);
    call.on("data", () => {
      call.cancel();
      done(null);
    });
    call.on("error", done);
    call.on("status", (status: grpc.StatusObject) => status.code === grpc.status.OK && done(null));
    if (kind === "bidi_streaming") {
      const duplex = call as grpc.ClientDuplexStream<Buffer, Buffer>;
      duplex.write(LIST_SERVICES);
      duplex.end();
    }
  });
}

describe("bearer tokens and roles on every RPC", () => {
  it("every method × {no token, unknown, expired, read, read_all, run, admin}: UNAUTHENTICATED, PERMISSION_DENIED naming the role, or through", async () => {
    // Every method the server offers is in the table: a new one must say what it needs.
    expect(methods.map(([path]) => path).sort()).toEqual(Object.keys(needed).sort());
    const t = await start({ plugins: [{ module: "plugins/system-test/mod.ts" }], server: { auth } });
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const identities: [string, string | undefined, 0 | 1 | 2 | 3][] = [
      ["no token", undefined, 0],
      ["unknown token", token("nobody"), 0],
      ["expired token", tokens.expired, 0],
      ["read", tokens.read, 1],
      // read_all may call what read may, no more: it sees others' actions in full (visibility.test.ts).
      ["read_all", tokens.readAll, 1],
      ["run", tokens.run, 2],
      ["admin", tokens.admin, 3],
    ];
    const outcomes: string[] = [];
    try {
      for (const [path, kind] of methods) {
        for (const [who, secret, rank] of identities) {
          const metadata = new grpc.Metadata();
          if (secret) metadata.set("authorization", `Bearer ${secret}`);
          const { code, details } = await rawCall(client, path, kind, metadata);
          const need = needed[path]!;
          let expected: string;
          if (need === "open") expected = "through";
          else if (rank === 0) expected = "UNAUTHENTICATED";
          else if (rank < RANK[need]) expected = `PERMISSION_DENIED: ${path} needs the ${need} role`;
          else expected = "through";
          let got: string;
          if (code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED) {
            got = code === grpc.status.UNAUTHENTICATED ? "UNAUTHENTICATED" : `PERMISSION_DENIED: ${details.split(";")[0]}`;
            // What to fix, in the message.
            if (who === "no token") expect(details).toContain("authorization: Bearer <token>");
            if (who === "unknown token") expect(details).toBe("the token is not one this server knows (authorization: Bearer <token>)");
            if (who === "expired token") expect(details).toBe("the token old expired at 2020-01-01T00:00:00.000Z");
          } else got = "through";
          outcomes.push(`${path} as ${who}: ${got}`);
          if (got !== expected) outcomes.push(`  expected ${expected} (status ${grpc.status[code]}: ${details})`);
        }
      }
    } finally {
      client.close();
    }
    expect(outcomes.filter((line) => line.startsWith("  expected"))).toEqual([]);
    expect(outcomes).toHaveLength(methods.length * identities.length);
  });

  it("health needs the read role too when open_health is false", async () => {
    const t = await start({ plugins: [{ module: "plugins/system-test/mod.ts" }], server: { auth: { ...auth, open_health: false } } });
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    try {
      const anonymous = await rawCall(client, "/grpc.health.v1.Health/Check", "unary", new grpc.Metadata());
      expect(grpc.status[anonymous.code]).toBe("UNAUTHENTICATED");
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${tokens.read}`);
      expect(grpc.status[(await rawCall(client, "/grpc.health.v1.Health/Check", "unary", metadata)).code]).toBe("OK");
    } finally {
      client.close();
    }
  });

  it("without TLS, a client cannot claim a certificate's identity by sending its metadata", async () => {
    const t = await start({
      plugins: [{ module: "plugins/system-test/mod.ts" }],
      server: { auth: { ...auth, certificates: [{ subject: "CN=trainer", roles: ["admin"] }] } },
    });
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    try {
      const metadata = new grpc.Metadata();
      metadata.set("plinth-peer-subject", "trainer");
      const outcome = await rawCall(client, "/plinth.v1.EngineService/ListModels", "unary", metadata);
      expect(grpc.status[outcome.code]).toBe("UNAUTHENTICATED");
    } finally {
      client.close();
    }
  });
});

describe("who started and who cancelled each action", () => {
  const people = { alice: token("alice"), bob: token("bob"), ops: token("ops") };
  const viewer = token("viewer");
  const config = {
    plugins: [{ module: "plugins/system-test/mod.ts" }],
    server: {
      auth: {
        tokens: [
          { name: "alice", sha256: sha256(people.alice), roles: ["run"] },
          { name: "bob", sha256: sha256(people.bob), roles: ["run"] },
          { name: "ops", sha256: sha256(people.ops), roles: ["admin"] },
          { name: "viewer", sha256: sha256(viewer), roles: ["read"] },
        ],
      },
    },
  };

  it("records the creator, lets a caller cancel only its own actions unless admin, records the canceller, and filters by creator", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const t = await start(config, { logger, token: people.alice });
    const alice = t;
    const bob = clientsOf(t.channel, people.bob);
    const ops = clientsOf(t.channel, people.ops);

    const modelId = (await alice.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const mine = (await alice.engine.predict({ modelId, kwargs: { sleep: json(30) } })).action!;
    expect(mine.createdBy).toBe("alice");
    const other = await bob.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json(30) } });
    expect(other.action!.createdBy).toBe("bob");

    // Bob may not cancel Alice's action; it goes on.
    await expectStatus(
      bob.actions.cancelAction({ actionId: mine.id }),
      Status.PERMISSION_DENIED,
      new RegExp(`^action ${mine.id} was started by alice; cancelling another caller's action needs the admin role$`),
    );
    expect((await alice.actions.getAction({ actionId: mine.id })).action!.status).not.toBe(ActionStatus.CANCELLED);

    // Alice cancels her own; ops (admin) cancels Bob's.
    const cancelled = (await alice.actions.cancelAction({ actionId: mine.id })).action!;
    expect(cancelled.status).toBe(ActionStatus.CANCELLED);
    expect(cancelled.cancel?.cancelledBy).toBe("alice");
    const byOps = (await ops.actions.cancelAction({ actionId: other.action!.id })).action!;
    expect(byOps.status).toBe(ActionStatus.CANCELLED);
    expect(byOps.cancel?.cancelledBy).toBe("ops");

    // ListActions by creator, from the history.
    const listed = async (createdBy: string) => (await ops.actions.listActions({ createdBy })).actions.map((a) => a.id).sort();
    expect(await listed("bob")).toEqual([other.action!.id]);
    expect(await listed("alice")).toHaveLength(2);
    expect(await listed("alice")).toContain(mine.id);

    // One audit line per mutating call, refusals included; never a token.
    const audit = lines
      .filter((l) => l.audit === true)
      .map(({ caller, method, actionId, outcome }) => ({ caller, method: method as string, actionId, outcome }));
    expect(audit).toEqual(
      expect.arrayContaining([
        { caller: "alice", method: "/plinth.v1.EngineService/Predict", actionId: mine.id, outcome: "OK" },
        { caller: "bob", method: "/plinth.v1.ActionService/CancelAction", actionId: mine.id, outcome: "PERMISSION_DENIED" },
        { caller: "alice", method: "/plinth.v1.ActionService/CancelAction", actionId: mine.id, outcome: "OK" },
        { caller: "ops", method: "/plinth.v1.ActionService/CancelAction", actionId: other.action!.id, outcome: "OK" },
      ]),
    );
    expect(audit.filter((l) => l.method.endsWith("/CreateInstance") || l.method.endsWith("/Predict"))).toHaveLength(3);
    const everything = JSON.stringify(lines);
    for (const secret of Object.values(people)) expect(everything).not.toContain(secret);
  });

  it("an audit line records an unauthenticated attempt, with no caller and nothing of the request it did not decode", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const t = await start(config, { logger, token: token("intruder") });
    await expectStatus(t.engine.deleteModel({ modelId: "m-1" }), Status.UNAUTHENTICATED, /not one this server knows/);
    const audit = lines.filter((l) => l.audit);
    expect(audit).toEqual([expect.objectContaining({ caller: "", method: "/plinth.v1.EngineService/DeleteModel", outcome: "UNAUTHENTICATED" })]);
    // The request was never decoded for a caller the server does not know.
    expect(audit[0]).not.toHaveProperty("modelId");
  });

  it("an audit line names a caller refused for its role, and nothing of the request it did not decode", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const t = await start(config, { logger, token: viewer });
    await expectStatus(t.engine.predict({ modelId: "m-1" }), Status.PERMISSION_DENIED, /needs the run role; viewer has read$/);
    const audit = lines.filter((l) => l.audit);
    expect(audit).toEqual([expect.objectContaining({ caller: "viewer", method: "/plinth.v1.EngineService/Predict", outcome: "PERMISSION_DENIED" })]);
    expect(audit[0]).not.toHaveProperty("modelId");
  });
});

describe("limits per caller", () => {
  const people = { alice: token("alice"), bob: token("bob") };
  const config = (limits: Record<string, number>) => ({
    plugins: [{ module: "plugins/system-test/mod.ts" }],
    server: {
      auth: {
        tokens: [
          { name: "alice", sha256: sha256(people.alice), roles: ["run"] },
          { name: "bob", sha256: sha256(people.bob), roles: ["run"] },
        ],
      },
      limits,
    },
  });

  it("open streams: the one past streams_per_caller gets RESOURCE_EXHAUSTED naming the limit; others are not affected", async () => {
    const t = await start(config({ streams_per_caller: 2 }), { token: people.alice });
    const bob = clientsOf(t.channel, people.bob);
    const controller = new AbortController();
    const open = async (client: typeof bob) => {
      const stream = client.state.watchState({}, { signal: controller.signal })[Symbol.asyncIterator]();
      await stream.next(); // the snapshot: the stream is open
      return stream;
    };
    try {
      const first = await open(t);
      await open(t);
      const third = t.state.watchState({}, { signal: controller.signal })[Symbol.asyncIterator]().next();
      await expectStatus(third, Status.RESOURCE_EXHAUSTED, /^caller alice has 2 open streams; server\.limits\.streams_per_caller allows 2$/);
      // Bob has his own allowance.
      await open(bob);
      // Closing one frees its place.
      await first.return?.();
      await expect
        .poll(
          async () =>
            await open(t).then(
              () => "open",
              (e: Error) => e.message,
            ),
          { timeout: 60_000 },
        )
        .toBe("open");
    } finally {
      controller.abort();
    }
  });

  it("queued actions: the one past queued_per_caller gets RESOURCE_EXHAUSTED naming the limit; others still queue", async () => {
    const t = await start(config({ queued_per_caller: 2 }), { token: people.alice });
    const bob = clientsOf(t.channel, people.bob);
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    // One runs, two wait for the model.
    const running = (await t.engine.predict({ modelId, kwargs: { sleep: json(30) } })).action!;
    await t.engine.predict({ modelId });
    await t.engine.predict({ modelId });
    await expectStatus(
      t.engine.predict({ modelId }),
      Status.RESOURCE_EXHAUSTED,
      /^caller alice has 2 actions waiting and server\.limits\.queued_per_caller is 2; retry later$/,
    );
    const bobs = (await bob.engine.predict({ modelId })).action!;
    expect(bobs.status).toBe(ActionStatus.QUEUED);
    await t.actions.cancelAction({ actionId: running.id });
  });
});

describe("what a plugin child sees of the server", () => {
  it("a Node child gets PATH, HOME, LANG, TZ and the names its config lists, never the server's secrets", async () => {
    process.env.PLINTH_TEST_SECRET = "server-only";
    process.env.PLINTH_TEST_LISTED = "for-the-plugin";
    process.env.PLINTH_TEST_TOKEN = token("env");
    try {
      const t = await start(
        {
          plugins: [{ module: fixture("portable.ts"), env: ["PLINTH_TEST_LISTED"] }],
          server: { auth: { tokens: [{ name: "env", env: "PLINTH_TEST_TOKEN", roles: ["admin"] }] } },
        },
        { token: process.env.PLINTH_TEST_TOKEN },
      );
      const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
      const names = ["PLINTH_TEST_SECRET", "PLINTH_TEST_LISTED", "PLINTH_TEST_TOKEN"];
      const seen = jsonOf(
        (await t.engine.predict({ modelId, args: [json("env")], kwargs: { names: json(names) }, wait: true })).action!.result?.prediction,
      ) as {
        names: string[];
        values: Record<string, string | null>;
      };
      // Besides what the server passes on: Plinth's own (its mark, no colours, glibc's mmap threshold for freed models).
      const own = ["NO_COLOR", "PLINTH_CHILD", "MALLOC_MMAP_THRESHOLD_"];
      const allowed = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", ...own, "PLINTH_TEST_LISTED"];
      expect(seen.names.filter((n) => !allowed.includes(n))).toEqual([]);
      expect(seen.names).toEqual(expect.arrayContaining(["PATH", "PLINTH_CHILD", "PLINTH_TEST_LISTED"]));
      expect(seen.values).toEqual({ PLINTH_TEST_SECRET: null, PLINTH_TEST_LISTED: "for-the-plugin", PLINTH_TEST_TOKEN: null });
    } finally {
      delete process.env.PLINTH_TEST_SECRET;
      delete process.env.PLINTH_TEST_LISTED;
      delete process.env.PLINTH_TEST_TOKEN;
    }
  });

  it("a Deno child gets the same minimal environment", async () => {
    process.env.PLINTH_TEST_SECRET = "server-only";
    process.env.PLINTH_TEST_LISTED = "for-the-plugin";
    try {
      const names = ["PLINTH_TEST_SECRET", "PLINTH_TEST_LISTED", "PATH"];
      const t = await start({
        plugins: [{ module: fixture("portable.ts"), runtime: "deno", env: ["PLINTH_TEST_LISTED"], permissions: { env: names } }],
      });
      const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
      const seen = jsonOf(
        (await t.engine.predict({ modelId, args: [json("env")], kwargs: { names: json(names) }, wait: true })).action!.result?.prediction,
      );
      expect(seen).toEqual({
        names: ["PATH", "PLINTH_TEST_LISTED"],
        values: { PATH: process.env.PATH, PLINTH_TEST_LISTED: "for-the-plugin", PLINTH_TEST_SECRET: null },
      });
    } finally {
      delete process.env.PLINTH_TEST_SECRET;
      delete process.env.PLINTH_TEST_LISTED;
    }
  });

  it("a Deno plugin cannot read outside its folders through a symlink in node_modules", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, "node_modules"));
    symlinkSync("/", join(dir, "node_modules", "x"));
    const sdk = join(root, "sdk", "mod.ts");
    writeFileSync(
      join(dir, "mod.ts"),
      `import { defineModel, definePlugin } from ${JSON.stringify(sdk)};
export default definePlugin({ name: "peek", models: { "peek.Model": defineModel({
  instantiate: () => ({}),
  predict: async (_ctx, _model, args) => await Deno.readTextFile(new URL(String(args[0]), import.meta.url)),
}) } });
`,
    );
    writeFileSync(join(dir, "inside.txt"), "inside");
    const t = await start({ plugins: [{ module: join(dir, "mod.ts"), runtime: "deno" }] });
    const modelId = (await t.engine.createInstance({ modelType: "peek.Model", wait: true })).action!.modelId;
    const inside = (await t.engine.predict({ modelId, args: [json("inside.txt")], wait: true })).action!;
    expect(jsonOf(inside.result?.prediction)).toBe("inside");
    const escaped = (await t.engine.predict({ modelId, args: [json("node_modules/x/etc/hostname")], wait: true })).action!;
    expect(escaped.status).toBe(ActionStatus.FAILED);
    expect(escaped.error?.message).toMatch(/NotCapable|PermissionDenied|Requires read access/);
  });

  it("clients see plugin paths relative to the config's folder, not the host's absolute paths", async () => {
    const t = await start({ plugins: [{ module: fixture("misbehave.ts") }] });
    const plugins = (await t.engine.listPlugins({})).plugins;
    expect(plugins.map((p) => p.module)).toEqual(["test/fixtures/plugins/misbehave.ts"]);
    const modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    const failed = (await t.engine.predict({ modelId, kwargs: { mode: json("throw") }, wait: true })).action!;
    expect(failed.error?.stack).toContain("test/fixtures/plugins/misbehave.ts");
    expect(toJsonString(ActionSchema, failed)).not.toContain(root);
  });
});
