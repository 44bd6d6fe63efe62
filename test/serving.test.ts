/**
 * Serving a busy model through the real server and real children: instances a child
 * keeps between calls (resident), sent without their bytes, dropped past resident_mb,
 * lost with a killed child; and predicts of a concurrent model type on several children.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";
import { watchActions } from "./helpers/watch.ts";

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

  it("fits under a stream of concurrent predicts: each answer comes from the revision its action records, and none sent after a fit sees an older one", async () => {
    const s = await serve({}, { max_children: 3 });
    const model = await create(s, "serving.Counted");
    /** The revision the last fit whose call has returned made: every predict sent after it must run on it or later. */
    let floor = 1n;
    let fitting = true;
    const seen: { revision: bigint; fits: number; floor: bigint }[] = [];
    const client = async () => {
      while (fitting) {
        const sentAfter = floor;
        const { action } = await s.engine.predict({ modelId: model, kwargs: { ms: json(5) }, wait: true });
        expect(action!.status, action!.error?.message).toBe(ActionStatus.SUCCEEDED);
        seen.push({ revision: action!.modelRevision, fits: (jsonOf(action!.result!.prediction!) as { fits: number }).fits, floor: sentAfter });
      }
    };
    const clients = Array.from({ length: 4 }, client);
    for (let i = 0; i < 3; i++) {
      const { action } = await s.engine.fit({ modelId: model, wait: true });
      expect(action!.status).toBe(ActionStatus.SUCCEEDED);
      floor = action!.result!.model!.revision;
      // Some predicts run on each revision before the next fit.
      const count = seen.length;
      await expect.poll(() => seen.length, { timeout: 60_000 }).toBeGreaterThan(count + 4);
    }
    fitting = false;
    await Promise.all(clients);
    expect(floor).toBe(4n);
    for (const answer of seen) {
      // Revision 1 is the created instance (0 fits); each fit adds one revision.
      expect(answer.fits).toBe(Number(answer.revision) - 1);
      expect(answer.revision).toBeGreaterThanOrEqual(answer.floor);
    }
    expect(new Set(seen.map((a) => a.revision)).size).toBeGreaterThanOrEqual(3);
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

describe("batched predicts", () => {
  // One server for these tests (each on models of its own): its children serve them all.
  let batchServer: TestServer;
  beforeAll(async () => {
    batchServer = await startTestServer({
      backend: { kind: "memory" },
      engine: { max_children: 2 },
      plugins: [{ module: fixture("serving.ts") }],
      metrics: { address: "127.0.0.1:0" },
    });
  });
  afterAll(async () => {
    await batchServer.close();
  });

  /** What serving.Batched*'s predict answers for each item. */
  interface Item {
    pid: number;
    size: number;
    index: number;
    value: unknown;
  }

  /** Starts a predict (not waiting) of `value` on `model` with these item kwargs; returns its action id. */
  async function send(s: TestServer, model: string, value: unknown, kwargs: Record<string, unknown> = {}): Promise<string> {
    const { action } = await s.engine.predict({
      modelId: model,
      args: [json(value as never)],
      kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, json(v as never)])),
    });
    return action!.id;
  }

  const ended = (s: TestServer, ids: string[]) => Promise.all(ids.map(async (id) => (await s.actions.waitAction({ actionId: id })).action!));
  const statusOf = async (s: TestServer, id: string) => (await s.actions.getAction({ actionId: id })).action!;

  it("a batch of 16 with one poisoned item fails that item alone; every item shows its batch", async () => {
    const s = batchServer;
    const model = await create(s, "serving.Batched16");
    const [sizes, waits] = [await metric(s, 'plinth_batch_size_bucket{le="16"}'), await metric(s, "plinth_batch_wait_seconds_count")];
    const ids = await Promise.all(Array.from({ length: 16 }, (_, i) => send(s, model, i, i === 7 ? { poison: true } : {})));
    const actions = await ended(s, ids);
    expect(actions.map((a) => a.status)).toEqual(Array.from({ length: 16 }, (_, i) => (i === 7 ? ActionStatus.FAILED : ActionStatus.SUCCEEDED)));
    expect(actions[7]!.error).toMatchObject({ code: "invalid_argument", message: "poisoned item" });
    const batches = new Set(actions.map((a) => a.batch?.id));
    expect(batches.size).toBe(1);
    expect([...batches][0]).toMatch(/\w/);
    expect(actions.every((a) => a.batch?.size === 16)).toBe(true);
    // Each item got its own answer, from one call of 16.
    const answers = actions.filter((_, i) => i !== 7).map((a) => jsonOf(a.result!.prediction!) as unknown as Item);
    expect(answers.map((a) => a.value)).toEqual([...Array(16).keys()].filter((i) => i !== 7));
    expect(answers.every((a) => a.size === 16 && a.pid === answers[0]!.pid)).toBe(true);
    // One batch of 16 more on /metrics, and 16 more waits.
    expect(await metric(s, 'plinth_batch_size_bucket{le="16"}')).toBe(sizes + 1);
    expect(await metric(s, "plinth_batch_wait_seconds_count")).toBe(waits + 16);
  });

  it("an item cancelled before its batch goes leaves it, and the batch forms without it", async () => {
    const s = batchServer;
    const model = await create(s, "serving.Batched4");
    const first = [await send(s, model, "a"), await send(s, model, "b"), await send(s, model, "c")];
    const { action: cancelled } = await s.actions.cancelAction({ actionId: first[1]! });
    expect(cancelled).toMatchObject({ status: ActionStatus.CANCELLED, cancel: { phase: ActionStatus.QUEUED } });
    const rest = [await send(s, model, "d"), await send(s, model, "e")];
    const actions = await ended(s, [first[0]!, first[2]!, ...rest]);
    expect(actions.map((a) => a.status)).toEqual(Array(4).fill(ActionStatus.SUCCEEDED));
    expect(actions.map((a) => (jsonOf(a.result!.prediction!) as unknown as Item).value)).toEqual(["a", "c", "d", "e"]);
    expect(new Set(actions.map((a) => a.batch?.id)).size).toBe(1);
    expect((await statusOf(s, first[1]!)).batch).toBeUndefined();
  });

  it("an item cancelled while its batch runs ends at once and the others finish; cancelling every item stops the child", async () => {
    const s = batchServer;
    const model = await create(s, "serving.Batched4");
    const gate = join(tempDir(), "open");
    const ids = await Promise.all(["a", "b", "c", "d"].map((v) => send(s, model, v, { gate })));
    await expect
      .poll(async () => (await Promise.all(ids.map((id) => statusOf(s, id)))).every((a) => a.status === ActionStatus.EXECUTING), {
        timeout: 60_000,
      })
      .toBe(true);
    const { action: one } = await s.actions.cancelAction({ actionId: ids[1]! });
    expect(one).toMatchObject({ status: ActionStatus.CANCELLED, cancel: { phase: ActionStatus.EXECUTING, signal: "" } });
    writeFileSync(gate, "");
    const others = await ended(s, [ids[0]!, ids[2]!, ids[3]!]);
    expect(others.map((a) => a.status)).toEqual(Array(3).fill(ActionStatus.SUCCEEDED));
    const pid = (jsonOf(others[0]!.result!.prediction!) as unknown as Item).pid;

    // A second batch, every item cancelled while it runs: its call is stopped by message, its child kept.
    const closed = join(tempDir(), "never");
    const more = await Promise.all(["e", "f", "g", "h"].map((v) => send(s, model, v, { gate: closed })));
    await expect
      .poll(async () => (await Promise.all(more.map((id) => statusOf(s, id)))).every((a) => a.status === ActionStatus.EXECUTING), {
        timeout: 60_000,
      })
      .toBe(true);
    for (const id of more) await s.actions.cancelAction({ actionId: id });
    const all = await ended(s, more);
    expect(all.map((a) => a.status)).toEqual(Array(4).fill(ActionStatus.CANCELLED));
    // The first three ended at once, nothing stopped; the last stopped the call, which answered: no signal, its child kept.
    for (const a of all.slice(0, 3)) expect(a.cancel).toMatchObject({ phase: ActionStatus.EXECUTING, signal: "", exitCode: 0 });
    expect(all[3]!.cancel).toMatchObject({ phase: ActionStatus.EXECUTING, signal: "", exitCode: 0, forced: false });
    expect(pid).toBeGreaterThan(0);
  });

  it("a batch run that returns the wrong number of results fails every item, saying how many for how many", async () => {
    const s = batchServer;
    const model = await create(s, "serving.BadCount");
    const actions = await ended(s, await Promise.all([1, 2, 3, 4].map((v) => send(s, model, v))));
    for (const a of actions) {
      expect(a.status).toBe(ActionStatus.FAILED);
      expect(a.error!.message).toContain("returned 3 results for 4 items");
    }
  });

  it("an item's progress reaches its own action only", async () => {
    const s = batchServer;
    const model = await create(s, "serving.Batched4");
    const gate = join(tempDir(), "open");
    const ids = await Promise.all(["a", "b", "c", "d"].map((v) => send(s, model, v, { gate, report: `from ${v}` })));
    const seen = await watchActions(s, (view) => ids.every((id) => view.get(id)?.state?.kind.case === "structValue"));
    writeFileSync(gate, "");
    for (const [i, id] of ids.entries())
      expect(seen.get(id)!.state).toMatchObject({ kind: { value: { fields: { item: { kind: { value: `from ${"abcd"[i]}` } } } } } });
    await ended(s, ids);
  });

  it("a fit sends the batch filling on its model at once, and the items after it form a batch on the new revision", async () => {
    const s = batchServer;
    const model = await create(s, "serving.Batched16");
    // Two items of a batch of 16 that would wait ten minutes for the rest.
    const early = [await send(s, model, 1), await send(s, model, 2)];
    const { action: fit } = await s.engine.fit({ modelId: model });
    const [a, b] = await ended(s, early);
    expect([a!.status, b!.status]).toEqual([ActionStatus.SUCCEEDED, ActionStatus.SUCCEEDED]);
    expect([a!.batch?.size, a!.modelRevision]).toEqual([2, 1n]);
    const fitted = (await s.actions.waitAction({ actionId: fit!.id })).action!;
    expect(fitted.status).toBe(ActionStatus.SUCCEEDED);
    // Items sent while the next fit waits do not wait for a full batch either.
    const later = await send(s, model, 3);
    const { action: second } = await s.engine.fit({ modelId: model });
    const [c] = await ended(s, [later]);
    expect(c!.modelRevision).toBe(2n);
    expect((await s.actions.waitAction({ actionId: second!.id })).action!.status).toBe(ActionStatus.SUCCEEDED);
  });
});

describe("batched predicts declared wrong", () => {
  it("a plugin whose batch is out of range stops the server at start, naming the config key and the plugin's own key", async () => {
    const module = join(import.meta.dirname, "fixtures/failing/batch-size-0.ts");
    await expect(startTestServer({ backend: { kind: "memory" }, plugins: [{ module }] })).rejects.toThrow(
      /config plugins\[0\]\.module: .*models\["bad\.SizeZero"\]\.predict\.batch\.maxSize must be an integer of at least 1 \(got 0\)/,
    );
  });
});

describe("the README's batched plugin", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Serving a model"), readme.indexOf("## Running on a network"));
  const code = [...section.matchAll(/```ts\n([\s\S]+?)\n```/g)].map((m) => m[1]!).find((c) => c.startsWith("// plugins/scale/mod.ts"))!;

  it("serves as written: each predict its own answer, a bad item failing alone, in batches", async () => {
    // Inside the repository, so that zod resolves as in a clone.
    const dir = tempDir("readme-batch-", join(root, "test-artifacts"));
    const module = join(dir, "mod.ts");
    writeFileSync(module, code.replaceAll('"../../sdk/', `"${join(root, "sdk")}/`));
    t = await startTestServer({ backend: { kind: "memory" }, engine: { max_children: 1 }, plugins: [{ module }] });
    const { action } = await t.engine.createInstance({ modelType: "scale.Linear", wait: true });
    const model = action!.modelId;
    const ids = await Promise.all([1, 2, -3, 4].map(async (x) => (await t!.engine.predict({ modelId: model, args: [json(x)] })).action!.id));
    const ended = await Promise.all(ids.map(async (id) => (await t!.actions.waitAction({ actionId: id })).action!));
    expect(ended.map((a) => (a.status === ActionStatus.SUCCEEDED ? jsonOf(a.result!.prediction!) : a.error!.message))).toEqual([
      2,
      4,
      "args[0]: -3 is below 0",
      8,
    ]);
    expect(ended[2]!.error!.code).toBe("invalid_argument");
    expect(ended.every((a) => (a.batch?.size ?? 0) >= 1)).toBe(true);
  });
});
