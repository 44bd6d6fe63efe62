/**
 * Several servers on one PostgreSQL database, as separate processes: work flows to the
 * server with free children, calls on one model keep their order wherever they run,
 * every server tells the same state, a cancel reaches the child wherever it runs, and a
 * server that dies or stalls has its actions ended and its queued work run elsewhere.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "nice-grpc";
import pg from "pg";
import { describe, inject, it, type TestContext } from "vitest";
import { type Action, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { niceDefinition } from "../server/rpc/service-definition.ts";
import { dataAccess, json } from "./helpers/args.ts";
import { newDatabase, startPostgres, type TestPostgres } from "./helpers/postgres.ts";
import { isAlive } from "./helpers/processes.ts";
import { fixture, root } from "./helpers/server.ts";
import { clients, descendantsOf, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const exec = promisify(execFile);
// Short for quick failovers here, yet above a busy machine's stalls: a server starting on a loaded
// machine was seen to miss its own renewals and be removed by the other before it served, at 2 s,
// and at 5 s with this file's tests at once beside other suites (load 20 on two cores).
const LEASE_SECONDS = 10;

/**
 * What a test started, stopped once it ends (`finished`: its context's onTestFinished). The
 * tests run at once, each on a database of its own, most of their time spent waiting on calls
 * that sleep and on leases: each stops its own, and asserts with its context's expect.
 */
type Finished = TestContext["onTestFinished"];
const startedIn = new WeakMap<Finished, { processes: ServerProcess[]; channels: { close(): void }[] }>();
function startedBy(finished: Finished) {
  let own = startedIn.get(finished);
  if (!own) {
    const mine = { processes: [] as ServerProcess[], channels: [] as { close(): void }[] };
    finished(() => {
      for (const c of mine.channels.splice(0)) c.close();
      for (const p of mine.processes.splice(0)) {
        if (p.child.exitCode === null && p.child.signalCode === null) {
          p.child.kill("SIGCONT");
          p.child.kill("SIGKILL");
        }
      }
    });
    startedIn.set(finished, mine);
    own = mine;
  }
  return own;
}

const systest = join(root, "plugins/system-test/mod.ts");
const iris = join(root, "plugins/iris/mod.ts");
const gated = fixture("cluster-gated.ts");
const serving = fixture("serving.ts");

/**
 * A server process on `url`, with `maxChildren` children at most and the plugins given
 * (a module, or a module with more of its keys as YAML lines); `backend`: more backend
 * keys as YAML lines. Its clients, and its /metrics. The tests start their two at once
 * (Promise.all) where neither needs to be first: one migrates the new database, the other waits.
 */
async function server(
  finished: Finished,
  url: string,
  options: { maxChildren?: number; plugins?: (string | { module: string; lines: string[] })[]; backend?: string[] } = {},
) {
  const config = writeConfig(
    [
      "backend:",
      "  kind: postgres",
      `  url: ${url}`,
      `  lease_seconds: ${LEASE_SECONDS}`,
      ...(options.backend ?? []).map((line) => `  ${line}`),
      "engine:",
      `  max_children: ${options.maxChildren ?? 2}`,
      // Far above a busy machine's delays: a cancelled child that needs SIGKILL shows as forced.
      "  sigterm_timeout: 30",
      // No spare child started ahead of a call: one per server, and again each time one gets
      // busy, is CPU the tests on two cores wait for (each test's calls start their own).
      "  min_idle_workers: 0",
      "metrics:",
      "  address: 127.0.0.1:0",
      "plugins:",
      ...(options.plugins ?? [systest]).flatMap((p) =>
        typeof p === "string" ? [`  - module: ${p}`] : [`  - module: ${p.module}`, ...p.lines.map((line) => `    ${line}`)],
      ),
    ].join("\n"),
  );
  const own = startedBy(finished);
  const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
  own.processes.push(p);
  const c = clients(await p.port);
  own.channels.push(c.channel);
  const port = await p.port;
  const name = (await c.engine.listPlugins({})).servers.find((s) => s.thisServer)!.name;
  const metricsLine = p
    .output()
    .split("\n")
    .find((line) => line.includes('"msg":"metrics"'))!;
  const metricsUrl = JSON.parse(metricsLine).metrics as string;
  /** The value of one sample on this server's /metrics (0 when absent). */
  const metric = async (sample: string) => {
    const text = await (await fetch(metricsUrl)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
    return line ? Number(line.slice(sample.length + 1)) : 0;
  };
  return { ...c, process: p, name, address: `127.0.0.1:${port}`, metric };
}

const ended = (a: Action) => [ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED].includes(a.status);
const ms = (t: Action["startTime"]) => Number(t!.seconds) * 1000 + t!.nanos / 1e6;

/** The most actions of `server` running at one moment, from their start and end times. */
function mostAtOnce(actions: Action[], server: string): number {
  const edges = actions
    .filter((a) => a.server === server)
    .flatMap((a) => [
      [ms(a.startTime), 1],
      [ms(a.endTime), -1],
    ])
    .sort((x, y) => x[0]! - y[0]! || x[1]! - y[1]!);
  let now = 0;
  let most = 0;
  for (const [, d] of edges) {
    now += d!;
    most = Math.max(most, now);
  }
  return most;
}

describe.concurrent("several servers on one PostgreSQL database", () => {
  it("share the work: more long actions than one server's children run on both, never more than each one's max_children at once", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url), server(onTestFinished, url)]);
    // Both listed, on either server, with what they run.
    const listed = (await b.engine.listPlugins({})).servers;
    expect(listed.map((s) => s.name).sort()).toEqual([a.name, b.name].sort());
    expect(listed.every((s) => s.modelTypes.includes("systest.Model") && /^127\.0\.0\.1:\d+$/.test(s.address))).toBe(true);

    // All sent to one server: eight one-second calls, two children per server.
    const sent = await Promise.all(
      Array.from({ length: 8 }, (_, i) => a.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json(1), n: json(i) } })),
    );
    const done = await Promise.all(sent.map((r) => b.actions.waitAction({ actionId: r.action!.id }).then((w) => w.action!)));
    expect(done.every((d) => d.status === ActionStatus.SUCCEEDED)).toBe(true);
    const ranOn = new Set(done.map((d) => d.server));
    expect(ranOn).toEqual(new Set([a.name, b.name]));
    expect(mostAtOnce(done, a.name)).toBeLessThanOrEqual(2);
    expect(mostAtOnce(done, b.name)).toBeLessThanOrEqual(2);
    // The same answer from either server.
    for (const d of done) {
      const [onA, onB] = await Promise.all([a.actions.getAction({ actionId: d.id }), b.actions.getAction({ actionId: d.id })]);
      expect(onA.action!.status).toBe(ActionStatus.SUCCEEDED);
      expect(onB.action!.result?.model?.id).toBe(onA.action!.result?.model?.id);
      expect(onB.action!.server).toBe(d.server);
    }
  });

  it("run the calls on one model one at a time and in the order they came, whichever server each reached and ran on", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url), server(onTestFinished, url)]);
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const via = i % 2 === 0 ? a : b;
      ids.push((await via.engine.fit({ modelId, args: [json(i)], kwargs: { sleep: json(0.3) } })).action!.id);
    }
    const fits = await Promise.all(ids.map((actionId) => a.actions.waitAction({ actionId }).then((w) => w.action!)));
    expect(fits.filter((f) => f.status !== ActionStatus.SUCCEEDED).map((f) => f.error?.message)).toEqual([]);
    // In order: each started after the one before it ended, and stored the next revision.
    for (let i = 1; i < fits.length; i++) expect(ms(fits[i]!.startTime)).toBeGreaterThanOrEqual(ms(fits[i - 1]!.endTime));
    expect(fits.map((f) => f.result!.model!.revision)).toEqual([2n, 3n, 4n, 5n, 6n, 7n]);
    const model = (await b.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(JSON.parse(new TextDecoder().decode(model.instance)).fits.map((f: { args: number[] }) => f.args[0])).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("UpdateInstance on one server waits for the call running on the model on another, then stores the revision after it", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url), server(onTestFinished, url)]);
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await a.engine.fit({ modelId, args: [json("first")], kwargs: { sleep: json(1) } });
    for await (const u of a.actions.watchAction({ actionId: action!.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const instance = new TextEncoder().encode(JSON.stringify({ args: [], fits: ["set by hand"] }));
    const updated = (await b.engine.updateInstance({ modelId, instance })).model!;
    const fit = (await a.actions.getAction({ actionId: action!.id })).action!;
    // The fit ran to its end and stored revision 2; the update came after it, as revision 3.
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    expect(fit.result!.model!.revision).toBe(2n);
    expect(updated.revision).toBe(3n);
    const latest = (await a.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(JSON.parse(new TextDecoder().decode(latest.instance)).fits).toEqual(["set by hand"]);
  });

  it("tell one state: a watcher on one server sees another's progress and end; resume by revision works on any server", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url, { maxChildren: 1 }), server(onTestFinished, url, { maxChildren: 1 })]);
    const revision = await stateRevision(a);
    const stop = new AbortController();
    const seen: Action[] = [];
    let snapshots = 0;
    // Resumed from a revision that server a gave, on server b: what changed since, no snapshot.
    const watching = (async () => {
      for await (const r of watchState(b, revision, stop.signal)) {
        if (r.event.case === "snapshot") snapshots++;
        if (r.event.case !== "actionUpserted") continue;
        seen.push(r.event.value);
        if (ended(r.event.value)) return;
      }
    })();
    const { action } = await a.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json(0.6) } });
    await watching;
    stop.abort();
    expect(snapshots).toBe(0);
    const mine = seen.filter((s) => s.id === action!.id);
    expect(mine.at(-1)!.status).toBe(ActionStatus.SUCCEEDED);
    // Progress reports (throttled) reached server b, whichever server ran it.
    expect(mine.some((s) => s.status === ActionStatus.EXECUTING && s.state !== undefined)).toBe(true);
    // Both servers hold the same revision once quiet.
    await expect.poll(async () => (await stateRevision(a)) === (await stateRevision(b)), { timeout: 60_000 }).toBe(true);
  });

  it("cancel from any server: a running action's child stops wherever it runs, a queued one ends at once", async ({ expect, onTestFinished }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url, { maxChildren: 1 }), server(onTestFinished, url, { maxChildren: 1 })]);
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action: running } = await a.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    const { action: queued } = await a.engine.fit({ modelId, args: [json("queued")] });
    let runner = "";
    for await (const u of a.actions.watchAction({ actionId: running!.id })) {
      if (u.action!.status === ActionStatus.EXECUTING) {
        runner = u.action!.server;
        break;
      }
    }
    // The queued one, cancelled through the server that does not run the other.
    const other = runner === a.name ? b : a;
    const owner = runner === a.name ? a : b;
    const cq = (await other.actions.cancelAction({ actionId: queued!.id })).action!;
    expect(cq.status).toBe(ActionStatus.CANCELLED);
    expect(cq.cancel!.phase).toBe(ActionStatus.QUEUED);
    const children = descendantsOf(owner.process.child.pid!);
    expect(children.length).toBeGreaterThan(0);
    const cr = (await other.actions.cancelAction({ actionId: running!.id })).action!;
    expect(cr.status).toBe(ActionStatus.CANCELLED);
    expect(cr.cancel).toMatchObject({ by: "CancelAction", phase: ActionStatus.EXECUTING, forced: false });
    expect(cr.server).toBe(runner);
    // The model is where it was: neither fit stored anything.
    expect((await owner.engine.getModel({ modelId })).model!.revision).toBe(1n);
  });

  it("a queued call past its timeout fails at once, without waiting for a free child", async ({ expect, onTestFinished }) => {
    const url = await newDatabase();
    const a = await server(onTestFinished, url, { maxChildren: 1 });
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action: busy } = await a.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    for await (const u of a.actions.watchAction({ actionId: busy!.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const { action } = await a.engine.createInstance({ modelType: "systest.Model", timeout: { seconds: 1n } });
    const ended = (await a.actions.waitAction({ actionId: action!.id })).action!;
    expect(ended.status).toBe(ActionStatus.FAILED);
    expect(ended.error?.code).toBe("deadline_exceeded");
    expect(ended.cancel).toMatchObject({ by: "timeout", phase: ActionStatus.QUEUED });
    expect((await a.actions.getAction({ actionId: busy!.id })).action!.status).toBe(ActionStatus.EXECUTING);
  });

  it("a claim whose answer was lost (the call held by a server that does not run it) goes back to the queue and runs", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const a = await server(onTestFinished, url, { maxChildren: 1 });
    const busy = (await a.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json(60) } })).action!;
    for await (const u of a.actions.watchAction({ actionId: busy.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const queued = (await a.engine.createInstance({ modelType: "systest.Model", args: [json("held")] })).action!;
    // As a claim committed whose answer never came back: held by server a, run by no one.
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      expect((await db.query("UPDATE action_requests SET owner = $1 WHERE action_id = $2", [a.name, queued.id])).rowCount).toBe(1);
    } finally {
      await db.end();
    }
    await a.actions.cancelAction({ actionId: busy.id });
    const ran = (await a.actions.waitAction({ actionId: queued.id })).action!;
    expect(ran.status).toBe(ActionStatus.SUCCEEDED);
    expect(a.process.output()).toMatch(/actions this server had claimed but was not running/);
  });

  it("a server killed mid-fit: its fit ends interrupted, the call queued behind it runs on another, its children stop", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const a = await server(onTestFinished, url, { maxChildren: 1 });
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await a.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    for await (const u of a.actions.watchAction({ actionId: action!.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const queued = (await a.engine.fit({ modelId, args: [json("after")] })).action!;
    const b = await server(onTestFinished, url, { maxChildren: 1 });
    const children = descendantsOf(a.process.child.pid!);
    a.process.child.kill("SIGKILL");
    // (How soon, against the lease, is measured by `npm run bench:failover`.)
    const failed = (await b.actions.waitAction({ actionId: action!.id })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    expect(failed.error?.code).toBe("interrupted");
    expect(failed.error?.message).toMatch(new RegExp(`^Plinth server pid ${a.process.child.pid} on .* is gone`));
    const ran = (await b.actions.waitAction({ actionId: queued.id })).action!;
    expect(ran.status).toBe(ActionStatus.SUCCEEDED);
    expect(ran.server).toBe(b.name);
    const model = (await b.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(model.revision).toBe(2n);
    expect(JSON.parse(new TextDecoder().decode(model.instance)).fits).toEqual([{ args: ["after"], kwargs: {} }]);
    // Their stdin closed with the server: they stop by themselves.
    await expect.poll(() => children.filter(isAlive), { timeout: 60_000 }).toEqual([]);
    expect((await b.engine.listPlugins({})).servers.map((s) => s.name)).toEqual([b.name]);
  });

  it("a stalled server is removed once its lease lapses; woken, it writes nothing more and stops, and what the others ended stays ended", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url, { maxChildren: 1 }), server(onTestFinished, url, { maxChildren: 1 })]);
    const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await a.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    let runner = "";
    for await (const u of a.actions.watchAction({ actionId: action!.id })) {
      if (u.action!.status === ActionStatus.EXECUTING) {
        runner = u.action!.server;
        break;
      }
    }
    const [stalled, survivor] = runner === a.name ? [a, b] : [b, a];
    stalled.process.child.kill("SIGSTOP");
    const failed = (await survivor.actions.waitAction({ actionId: action!.id })).action!;
    expect(failed.error?.code).toBe("interrupted");
    expect(failed.error?.message).toMatch(
      new RegExp(`^Plinth server pid ${stalled.process.child.pid} on .* stopped responding \\(its lease lapsed\\)$`),
    );
    const exited = once(stalled.process.child, "exit");
    stalled.process.child.kill("SIGCONT");
    const [code] = await exited;
    expect(code).toBe(1);
    expect(stalled.process.output()).toMatch(/this server lost its lease on .*it writes nothing more and stops/);
    const after = (await survivor.actions.getAction({ actionId: action!.id })).action!;
    expect(after.status).toBe(ActionStatus.FAILED);
    expect(after.error?.message).toBe(failed.error?.message);
    expect((await survivor.engine.getModel({ modelId })).model!.revision).toBe(1n);
  });

  it("serve one model's concurrent predicts on both at once; a fit sent meanwhile waits for both, and the predicts after it run on its revision", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([server(onTestFinished, url, { plugins: [gated] }), server(onTestFinished, url, { plugins: [gated] })]);
    const modelId = (await a.engine.createInstance({ modelType: "cluster.Gated", wait: true })).action!.modelId;
    const gates = [join(tempDir(), "first"), join(tempDir(), "second")];
    const predict = (via: Clients, gate: string) => via.engine.predict({ modelId, kwargs: { gate: json(gate) } }).then((r) => r.action!.id);
    const executing = async (via: Clients, actionId: string) => {
      for await (const u of via.actions.watchAction({ actionId })) if (u.action!.status === ActionStatus.EXECUTING) return u.action!;
      throw new Error(`action ${actionId} ended before it executed`);
    };
    // One predict through each server: each runs its own, at once.
    const first = await predict(a, gates[0]!);
    const second = await predict(b, gates[1]!);
    const running = await Promise.all([executing(a, first), executing(a, second)]);
    expect(new Set(running.map((r) => r.server))).toEqual(new Set([a.name, b.name]));

    // Both servers have a child to spare: the fit waits for the predicts all the same, and so
    // does the predict sent after it.
    const fit = (await a.engine.fit({ modelId })).action!.id;
    const after = await predict(b, gates[0]!);
    const status = async (id: string) => (await b.actions.getAction({ actionId: id })).action!.status;
    expect(await status(fit)).toBe(ActionStatus.QUEUED);
    writeFileSync(gates[0]!, "");
    const firstEnded = (await a.actions.waitAction({ actionId: first })).action!;
    expect(firstEnded.status).toBe(ActionStatus.SUCCEEDED);
    expect([await status(fit), await status(after), await status(second)]).toEqual([
      ActionStatus.QUEUED,
      ActionStatus.QUEUED,
      ActionStatus.EXECUTING,
    ]);
    writeFileSync(gates[1]!, "");
    const fitEnded = (await a.actions.waitAction({ actionId: fit })).action!;
    expect(fitEnded.status).toBe(ActionStatus.SUCCEEDED);
    expect(fitEnded.result!.model!.revision).toBe(2n);
    const secondEnded = (await a.actions.waitAction({ actionId: second })).action!;
    expect(ms(fitEnded.startTime)).toBeGreaterThanOrEqual(Math.max(ms(firstEnded.endTime), ms(secondEnded.endTime)));

    // The predict admitted after the fit, and those sent once it returned, ran on its revision.
    const later = [after, await predict(a, gates[0]!), await predict(b, gates[0]!)];
    const ended = await Promise.all(later.map((actionId) => a.actions.waitAction({ actionId }).then((w) => w.action!)));
    expect(ended.map((e) => e.status)).toEqual(later.map(() => ActionStatus.SUCCEEDED));
    expect(ended.map((e) => e.modelRevision)).toEqual([2n, 2n, 2n]);
    expect(ms(ended[0]!.startTime)).toBeGreaterThanOrEqual(ms(fitEnded.endTime));
    expect([firstEnded.modelRevision, secondEnded.modelRevision]).toEqual([1n, 1n]);
  });

  it("a server claims the calls on a model its children hold before an older call on another: the held one is sent without its bytes", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    // One child, which holds one 1 MB model at a time; no call waits long enough to lose its turn.
    const a = await server(onTestFinished, url, {
      maxChildren: 1,
      plugins: [{ module: serving, lines: ["resident_mb: 1.5"] }],
      backend: ["claim_affinity_ms: 600000"],
    });
    const create = async (modelType: string, kwargs = {}) => (await a.engine.createInstance({ modelType, kwargs, wait: true })).action!.modelId;
    const size = { size: json(2 ** 20) };
    const [warm, cold, busy] = [await create("serving.Weights", size), await create("serving.Weights", size), await create("serving.Gated")];
    const warmUp = (await a.engine.predict({ modelId: warm, wait: true })).action!;
    expect(warmUp.status).toBe(ActionStatus.SUCCEEDED);
    // The child is busy; a call on the cold model comes, then one on the warm one.
    const gate = join(tempDir(), "open");
    const blocker = (await a.engine.predict({ modelId: busy, kwargs: { gate: json(gate) } })).action!.id;
    for await (const u of a.actions.watchAction({ actionId: blocker })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const older = (await a.engine.predict({ modelId: cold })).action!.id;
    const newer = (await a.engine.predict({ modelId: warm })).action!.id;
    const resident = () => a.metric('plinth_instance_sends_total{resident="true"}');
    const before = await resident();
    writeFileSync(gate, "");
    const o = (await a.actions.waitAction({ actionId: older })).action!;
    const n = (await a.actions.waitAction({ actionId: newer })).action!;
    expect([o.status, n.status]).toEqual([ActionStatus.SUCCEEDED, ActionStatus.SUCCEEDED]);
    // The warm model's call ran first, on the instance the child held: no bytes sent.
    expect(ms(n.startTime)).toBeLessThanOrEqual(ms(o.startTime));
    expect(await resident()).toBe(before + 1);
  });

  it("servers with different plugins: a call runs on a server that has its model type, and ListPlugins says which has what", async ({
    expect,
    onTestFinished,
  }) => {
    const url = await newDatabase();
    const [a, b] = await Promise.all([
      server(onTestFinished, url, { plugins: [systest] }),
      server(onTestFinished, url, { plugins: [systest, iris] }),
    ]);
    const listed = (await a.engine.listPlugins({})).servers;
    expect(listed.find((s) => s.name === a.name)!.modelTypes).not.toContain("iris.DecisionTree");
    expect(listed.find((s) => s.name === b.name)!.modelTypes).toContain("iris.DecisionTree");
    const created = (await a.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!;
    expect(created.status).toBe(ActionStatus.SUCCEEDED);
    expect(created.server).toBe(b.name);
    // Its data-access functions are only on b too: a fit with them, sent to a, runs there.
    const fit = (await a.engine.fit({ modelId: created.modelId, args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")], wait: true })).action!;
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    expect(fit.server).toBe(b.name);
    expect(fit.dataAccess.map((d) => [d.name, d.status])).toEqual([
      ["iris.inputs", ActionStatus.SUCCEEDED],
      ["iris.outputs", ActionStatus.SUCCEEDED],
    ]);
    // The command line says the same: both servers, what each runs, the one answering marked.
    // (The package's bin as npx runs it, without npx's own second of start-up: cli.test.ts runs npx.)
    const sleeper = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const running = (await a.engine.predict({ modelId: sleeper, kwargs: { sleep: json(60) } })).action!;
    for await (const u of a.actions.watchAction({ actionId: running.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
    const { stdout } = await exec(process.execPath, [inject("cliBundle"), "--address", a.address, "servers", "-o", "json"], { cwd: root });
    const servers = JSON.parse(stdout) as { name: string; modelTypes: string[]; running: string[]; thisServer?: boolean }[];
    expect(servers.map((s) => [s.name, s.modelTypes.includes("iris.DecisionTree"), s.thisServer ?? false]).sort()).toEqual(
      [
        [a.name, false, true],
        [b.name, true, false],
      ].sort(),
    );
    const ranOn = (await a.actions.getAction({ actionId: running.id })).action!.server;
    expect(servers.find((s) => s.name === ranOn)!.running).toContain(running.id);
    expect(servers.find((s) => s.name !== ranOn)!.running).not.toContain(running.id);
    await a.actions.cancelAction({ actionId: running.id });
    // And the Python client (when this machine's python3 has grpcio, as .ci/run installs).
    const python = { ...process.env, PATH: `/usr/bin:${process.env.PATH}`, PYTHONPATH: join(root, "clients/python") };
    const script = `from plinth_client import Client\nprint(sorted(s["name"] for s in Client("${a.address}").servers()))`;
    const printed = await exec("python3", ["-c", script], { env: python }).catch((e: Error) => e);
    if (!(printed instanceof Error) || !/No module named 'grpc'/.test(printed.message)) {
      expect(printed instanceof Error ? printed.message : printed.stdout.trim()).toBe(
        `[${[a.name, b.name]
          .sort()
          .map((n) => `'${n}'`)
          .join(", ")}]`,
      );
    }
    const unknown = await a.engine.createInstance({ modelType: "nobody.Has" }).catch((e: Error) => e);
    expect((unknown as Error).message).toMatch(/not declared by any loaded plugin; known model types: .*iris\.DecisionTree/);
  });

  it("a database restart mid-load: both servers serve on by themselves, every acknowledged action ends", async ({ expect, onTestFinished }) => {
    const pg: TestPostgres = await startPostgres();
    try {
      const url = await newDatabase(pg.adminUrl);
      const [a, b] = await Promise.all([server(onTestFinished, url), server(onTestFinished, url)]);
      const modelId = (await a.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
      const acknowledged = await Promise.all(
        Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).engine.predict({ modelId, args: [json(i)], kwargs: { sleep: json(0.2) } })),
      );
      await pg.stop();
      await pg.start();
      // Every acknowledged action ends (succeeded, or failed saying the store could not record it).
      for (const r of acknowledged) {
        await expect
          .poll(async () => (await a.actions.getAction({ actionId: r.action!.id }).catch(() => undefined))?.action, { timeout: 60_000 })
          .toSatisfy((x: Action | undefined) => x !== undefined && ended(x));
      }
      // And both serve new work again, without a restart.
      for (const via of [a, b]) {
        await expect
          .poll(async () => (await via.engine.predict({ modelId, args: [json("again")], wait: true }).catch(() => undefined))?.action?.status, {
            timeout: 60_000,
          })
          .toBe(ActionStatus.SUCCEEDED);
      }
      expect(a.process.child.exitCode).toBeNull();
      expect(b.process.child.exitCode).toBeNull();
    } finally {
      // Stopped before their database goes.
      for (const p of startedBy(onTestFinished).processes.splice(0)) {
        p.child.kill("SIGTERM");
        await once(p.child, "exit");
      }
      await pg.remove();
    }
  });
});

type Clients = Awaited<ReturnType<typeof server>>;

/** The state's revision on that server now. */
async function stateRevision(c: Clients): Promise<bigint> {
  return (await createClient(niceDefinition(StateService), c.channel).getState({})).state!.revision;
}

function watchState(c: Clients, fromRevision: bigint, signal: AbortSignal) {
  return createClient(niceDefinition(StateService), c.channel).watchState({ fromRevision }, { signal });
}
