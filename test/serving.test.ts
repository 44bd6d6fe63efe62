/**
 * Serving a busy model through the real server and real children: instances a child
 * keeps between calls (resident), sent without their bytes, dropped past resident_mb,
 * lost with a killed child; and predicts of a concurrent model type on several children.
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const MiB = 2 ** 20;

interface Served {
  pid: number;
  loads: number;
  fits: number;
  size: number;
}

async function serve(plugin: Record<string, unknown> = {}, engine: Record<string, unknown> = {}): Promise<TestServer> {
  t = await startTestServer({
    backend: { kind: "memory" },
    engine: { max_children: 1, min_idle_workers: 0, ...engine },
    plugins: [{ module: fixture("serving.ts"), ...plugin }],
    metrics: { address: "127.0.0.1:0" },
  });
  return t;
}

/** The value of one sample on /metrics (0 when absent). */
async function metric(s: TestServer, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.server.metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

async function create(s: TestServer, modelType: string, kwargs: Record<string, unknown> = {}): Promise<string> {
  const { action } = await s.engine.createInstance({
    modelType,
    kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, json(v as never)])),
    wait: true,
  });
  expect(action!.status).toBe(ActionStatus.SUCCEEDED);
  return action!.modelId;
}

async function predict(s: TestServer, modelId: string, kwargs: Record<string, unknown> = {}): Promise<Served> {
  const { action } = await s.engine.predict({
    modelId,
    kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, json(v as never)])),
    wait: true,
  });
  expect(action!.status, action!.error?.message).toBe(ActionStatus.SUCCEEDED);
  return jsonOf(action!.result!.prediction!) as unknown as Served;
}

describe("resident instances", () => {
  it("a warm child keeps the model: later predicts carry no instance bytes and load nothing", async () => {
    const s = await serve();
    const model = await create(s, "serving.Weights", { size: MiB });
    const first = await predict(s, model);
    const sent = await metric(s, "plinth_instance_bytes_sent_total");
    expect(sent).toBe(MiB);
    for (let i = 0; i < 20; i++) {
      const served = await predict(s, model);
      expect(served).toMatchObject({ pid: first.pid, loads: first.loads, size: MiB });
    }
    expect(await metric(s, "plinth_instance_bytes_sent_total")).toBe(sent);
  });

  it("after a fit the child that made the revision holds it: the next predict sees the fit without its bytes being sent", async () => {
    const s = await serve();
    const model = await create(s, "serving.Weights", { size: 64 * 1024 });
    await predict(s, model);
    const sent = await metric(s, "plinth_instance_bytes_sent_total");
    const { action } = await s.engine.fit({ modelId: model, wait: true });
    expect(action!.status).toBe(ActionStatus.SUCCEEDED);
    const served = await predict(s, model);
    expect(served.fits).toBe(1);
    expect(await metric(s, "plinth_instance_bytes_sent_total")).toBe(sent);
  });

  it("past resident_mb the least recently used model goes; every answer stays right", async () => {
    const s = await serve({ resident_mb: 2.5 });
    const [a, b, c] = [
      await create(s, "serving.Weights", { size: MiB }),
      await create(s, "serving.Weights", { size: MiB }),
      await create(s, "serving.Weights", { size: MiB }),
    ];
    await s.engine.fit({ modelId: b, wait: true });
    const loads = async (id: string) => (await predict(s, id)).loads;
    const first = await loads(a);
    expect((await predict(s, b)).fits).toBe(1);
    expect((await predict(s, c)).fits).toBe(0);
    // a was the least recently used of three 1 MiB models in 2.5 MiB: it is loaded again.
    expect(await loads(a)).toBeGreaterThan(first);
    // c stayed: it loads nothing more.
    const again = await predict(s, c);
    expect(await loads(c)).toBe(again.loads);
  });

  it("a child killed from outside takes its models with it; the next predicts are served from the bytes", async () => {
    const s = await serve();
    const models = [await create(s, "serving.Weights", { size: 4096 }), await create(s, "serving.Weights", { size: 8192 })];
    const before = await Promise.all(models.map((m) => predict(s, m)));
    process.kill(before[0]!.pid, "SIGKILL");
    await expect.poll(() => s.server.processes.live, { timeout: 60_000 }).toBe(0);
    for (const [i, m] of models.entries()) {
      const served = await predict(s, m);
      expect(served.pid).not.toBe(before[0]!.pid);
      expect(served.size).toBe([4096, 8192][i]);
    }
  });
});

describe("several children per model", () => {
  /** Predicts on one model of serving.Gated that wait for `gate` to exist; resolves once `n` are EXECUTING. */
  async function gated(s: TestServer, count: number) {
    const gate = join(tempDir(), "open");
    const model = await create(s, "serving.Gated");
    const ids = await Promise.all(
      Array.from({ length: count }, async () => (await s.engine.predict({ modelId: model, kwargs: { gate: json(gate) } })).action!.id),
    );
    const statuses = async () => Promise.all(ids.map(async (id) => (await s.actions.getAction({ actionId: id })).action!.status));
    return { gate, ids, statuses, open: () => writeFileSync(gate, "") };
  }

  it("predicts of a concurrent model type run at once on as many children as max_replicas allows; the rest wait", async () => {
    const s = await serve({ max_replicas: 2 }, { max_children: 4 });
    const run = await gated(s, 4);
    await expect.poll(async () => (await run.statuses()).filter((x) => x === ActionStatus.EXECUTING).length, { timeout: 60_000 }).toBe(2);
    expect((await run.statuses()).filter((x) => x === ActionStatus.QUEUED).length).toBe(2);
    run.open();
    const ended = await Promise.all(run.ids.map(async (id) => (await s.actions.waitAction({ actionId: id })).action!));
    expect(ended.map((a) => a.status)).toEqual(Array(4).fill(ActionStatus.SUCCEEDED));
    // Each answer names its child: two at a time ran on two children.
    expect(new Set(ended.map((a) => (jsonOf(a.result!.prediction!) as { pid: number }).pid)).size).toBeGreaterThanOrEqual(2);
    expect(existsSync(run.gate)).toBe(true);
  });

  it("without max_replicas a concurrent model type's predicts use every child", async () => {
    const s = await serve({}, { max_children: 3 });
    const run = await gated(s, 3);
    await expect.poll(async () => (await run.statuses()).filter((x) => x === ActionStatus.EXECUTING).length, { timeout: 60_000 }).toBe(3);
    run.open();
    for (const id of run.ids) expect((await s.actions.waitAction({ actionId: id })).action!.status).toBe(ActionStatus.SUCCEEDED);
  });

  it("a concurrent predict that returns withInstance fails saying it may not change its model, and ListPlugins shows the type concurrent", async () => {
    const s = await serve({ max_replicas: 2 }, { max_children: 2 });
    const model = await create(s, "serving.Gated");
    const { action } = await s.engine.predict({ modelId: model, kwargs: { store: json(true) }, wait: true });
    expect(action!.status).toBe(ActionStatus.FAILED);
    expect(action!.error!.message).toContain("declared concurrent, so it may not change its model");
    const types = (await s.engine.listPlugins({})).plugins.flatMap((p) => p.modelTypes);
    expect(types.find((f) => f.name === "serving.Gated")!.serving).toMatchObject({ concurrent: true, maxReplicas: 2 });
    expect(types.find((f) => f.name === "serving.Weights")!.serving).toMatchObject({ concurrent: false });
  });
});
