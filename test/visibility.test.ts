/**
 * What a caller sees of another caller's actions (server.auth.visibility), end to end: a
 * real server and plugin children, a `read` token reading alice's predict over gRPC and
 * Connect, in single gets, lists and streams, and through the CLI; read_all and alice
 * herself see it in full.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { chromium } from "playwright-core";
import { afterEach, describe, expect, inject, it } from "vitest";
import { type Action, ActionSchema, ActionStatus, ActionView } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { StateService, type WatchStateResponse } from "../gen/plinth/v1/state_service_pb.ts";
import { dataAccess, json } from "./helpers/args.ts";
import { clientsOf, fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";

const exec = promisify(execFile);
const CHROMIUM = "/usr/bin/chromium";
const missing = existsSync(CHROMIUM) ? "" : `no ${CHROMIUM}: apt-get install chromium`;
const cli = inject("cliBundle");

const token = (name: string) => `${name}-${randomBytes(16).toString("hex")}`;
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const people = { alice: token("alice"), viewer: token("viewer"), auditor: token("auditor") };

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(visibility?: "own" | "all") {
  t = await startTestServer(
    {
      http: { address: "127.0.0.1:0" },
      plugins: [{ module: join(root, "plugins/system-test/mod.ts") }, { module: fixture("misbehave.ts") }],
      server: {
        auth: {
          tokens: [
            { name: "alice", sha256: sha256(people.alice), roles: ["run"] },
            { name: "viewer", sha256: sha256(people.viewer), roles: ["read"] },
            { name: "auditor", sha256: sha256(people.auditor), roles: ["read_all"] },
          ],
          ...(visibility ? { visibility } : {}),
        },
      },
    },
    { token: people.alice },
  );
  return t;
}

/** ActionService and StateService over Connect, sending `secret` as the bearer token. */
function connectClients(server: TestServer, secret: string): { actions: Client<typeof ActionService>; state: Client<typeof StateService> } {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${secret}`);
    return next(request);
  };
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${server.server.httpPort}`, httpVersion: "1.1", interceptors: [bearer] });
  return { actions: createClient(ActionService, transport), state: createClient(StateService, transport) };
}

/** The versions of action `id` in a WatchState stream, until it has succeeded. */
async function watchedInState(messages: AsyncIterable<WatchStateResponse>, id: string): Promise<Action[]> {
  const seen: Action[] = [];
  for await (const { event } of messages) {
    const actions = event.case === "snapshot" ? event.value.actions : event.case === "actionUpserted" ? [event.value] : [];
    seen.push(...actions.filter((a) => a.id === id));
    if (seen.at(-1)?.status === ActionStatus.SUCCEEDED) return seen;
  }
  return seen;
}

/** Every stream of the same action, read to its end. */
async function all(messages: AsyncIterable<{ action?: Action | undefined }>): Promise<Action[]> {
  const seen: Action[] = [];
  for await (const { action } of messages) seen.push(action!);
  return seen;
}

/** What a client gets, as proto3 JSON text. */
const text = (action: Action) => JSON.stringify(toJson(ActionSchema, action));

describe("another caller's actions", () => {
  it("a read caller sees alice's predict in summary only, over gRPC and Connect, in single gets, lists and streams; read_all and alice in full", async () => {
    const s = await start();
    const viewer = clientsOf(s.channel, people.viewer);
    const viewerConnect = connectClients(s, people.viewer);
    const { modelId } = (await s.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!;

    const stop = new AbortController();
    // Alice's predict: a data-access argument that prints a secret, kwargs with another,
    // and a predict that prints its own lines.
    const started = (
      await s.engine.predict({
        modelId,
        args: [dataAccess("misbehave.log", [json("the secret line")])],
        kwargs: { mode: json("print"), note: json("a secret note") },
      })
    ).action!;
    const id = started.id;
    const streams = [
      watchedInState(viewer.state.watchState({}, { signal: stop.signal }), id),
      watchedInState(viewerConnect.state.watchState({}, { signal: stop.signal }), id),
      all(viewer.actions.watchAction({ actionId: id })),
      all(viewerConnect.actions.watchAction({ actionId: id })),
    ];
    const waited = (await viewer.actions.waitAction({ actionId: id, view: ActionView.FULL })).action!;
    expect(waited.status).toBe(ActionStatus.SUCCEEDED);
    const streamed = (await Promise.all(streams)).flat();
    stop.abort();

    const reads: [string, Action][] = [
      ["gRPC WaitAction", waited],
      ["gRPC GetAction FULL", (await viewer.actions.getAction({ actionId: id, view: ActionView.FULL })).action!],
      ["gRPC ListActions FULL", (await viewer.actions.listActions({ modelId, view: ActionView.FULL })).actions.find((a) => a.id === id)!],
      ["Connect GetAction FULL", (await viewerConnect.actions.getAction({ actionId: id, view: ActionView.FULL })).action!],
      ["Connect ListActions", (await viewerConnect.actions.listActions({ modelId })).actions.find((a) => a.id === id)!],
      ...streamed.map((a, i): [string, Action] => [`stream message ${i}`, a]),
    ];
    // Ended, it is still in the live state (engine.retain_actions).
    reads.push(["gRPC GetState", (await viewer.state.getState({})).state!.actions.find((a) => a.id === id)!]);
    reads.push(["Connect WaitAction", (await viewerConnect.actions.waitAction({ actionId: id })).action!]);
    expect(streamed.filter((a) => a.status === ActionStatus.SUCCEEDED)).toHaveLength(4);
    for (const [where, action] of reads) {
      expect(action.redacted, where).toBe(true);
      expect(action.createdBy, where).toBe("alice");
      expect(text(action), where).not.toMatch(/secret|printed with|written to|info line/);
    }
    // What it is stays: the data-access call by name, each argument's kind and size, the result's.
    expect(toJson(ActionSchema, waited)).toMatchObject({
      status: "ACTION_STATUS_SUCCEEDED",
      args: [{ dataAccess: { name: "misbehave.log", args: [{ summary: { kind: "ARG_KIND_JSON", sizeBytes: "17" } }] } }],
      kwargs: { note: { summary: { kind: "ARG_KIND_JSON", sizeBytes: "15" } }, mode: { summary: { kind: "ARG_KIND_JSON", sizeBytes: "7" } } },
      result: { prediction: { summary: { kind: "ARG_KIND_JSON", sizeBytes: "9" } } },
      dataAccess: [{ argument: "args[0]", name: "misbehave.log", status: "ACTION_STATUS_SUCCEEDED" }],
    });
    expect(waited.logTail).toEqual([]);
    expect(waited.dataAccess[0]!.logTail).toEqual([]);

    // Alice, and read_all over Connect, see it in full.
    const auditor = connectClients(s, people.auditor);
    for (const [who, action] of [
      ["alice", (await s.actions.getAction({ actionId: id, view: ActionView.FULL })).action!],
      ["read_all", (await auditor.actions.getAction({ actionId: id, view: ActionView.FULL })).action!],
    ] as const) {
      expect({ who, redacted: action.redacted }).toEqual({ who, redacted: false });
      expect(action.logTail).toContain("printed with console.log");
      expect(action.dataAccess[0]!.logTail).toContain("the secret line");
      expect(toJson(ActionSchema, action)).toMatchObject({
        kwargs: { note: { json: "a secret note" } },
        result: { prediction: { json: "printed" } },
      });
    }

    // The CLI says so: `plinth action` shows it in summary, `plinth logs` says why it prints nothing.
    const plinth = (...args: string[]) =>
      exec(process.execPath, [cli, "--address", `127.0.0.1:${s.port}`, "--token", people.viewer, ...args], { cwd: root }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    for (const command of ["action", "wait"]) {
      const shown = await plinth(command, id);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(/^shown +in summary: another caller's action/m);
      expect(shown.stdout).not.toMatch(/secret|printed with/);
    }
    const logs = await plinth("logs", id);
    expect(logs.code).toBe(17);
    expect(logs.stdout).toBe("");
    expect(logs.stderr).toContain(`plinth: action ${id} was started by alice: its log lines are not shown to this token`);
  });

  it("with server.auth.visibility all, a read caller sees others' actions in full", async () => {
    const s = await start("all");
    const { modelId } = (await s.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!;
    const id = (await s.engine.predict({ modelId, kwargs: { mode: json("print"), note: json("a note") }, wait: true })).action!.id;
    const viewer = connectClients(s, people.viewer);
    const action = (await viewer.actions.getAction({ actionId: id, view: ActionView.FULL })).action!;
    expect(action.redacted).toBe(false);
    expect(action.logTail).toContain("printed with console.log");
    expect(toJson(ActionSchema, action)).toMatchObject({ kwargs: { note: { json: "a note" } } });
  });

  it.skipIf(missing !== "")(
    "the dashboard's action page says whose it is and that it shows a summary, with no Save button; read_all's shows it all",
    async () => {
      const s = await start();
      const { modelId } = (await s.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!;
      const blob = { kind: { case: "bytes" as const, value: new Uint8Array([1, 2, 3]) } };
      const id = (await s.engine.predict({ modelId, kwargs: { mode: json("print"), blob }, wait: true })).action!.id;
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
      try {
        const pageOf = async (secret: string) => {
          const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
          page.setDefaultTimeout(100_000);
          await page.addInitScript(`sessionStorage.setItem("plinth.token", ${JSON.stringify(secret)})`);
          await page.goto(`http://127.0.0.1:${s.server.httpPort}/#/actions/${id}`);
          await page.locator("[data-testid=action] dl").waitFor();
          return page;
        };
        const viewer = await pageOf(people.viewer);
        const note = viewer.locator("[data-testid=redacted]");
        expect(await note.textContent()).toMatch(/^Started by alice: its arguments, result and logs are shown to your token only in summary/);
        expect(await viewer.locator("[data-testid^=save-]").count()).toBe(0);
        expect(await viewer.locator("pre.log").count()).toBe(0);
        expect(await viewer.locator("[data-testid=action]").textContent()).toMatch(/3 bytes/);
        mkdirSync(join(root, "test-artifacts"), { recursive: true });
        await viewer.screenshot({ path: join(root, "test-artifacts", "dashboard-redacted.png") });

        const auditor = await pageOf(people.auditor);
        await auditor.locator("pre.log").waitFor();
        expect(await auditor.locator("[data-testid=redacted]").count()).toBe(0);
        expect(await auditor.locator("[data-testid='save-kwargs.blob']").count()).toBe(1);
        expect(await auditor.locator("pre.log").textContent()).toContain("printed with console.log");
      } finally {
        await browser.close();
      }
    },
  );
});
