import { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Status } from "nice-grpc";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { procStat } from "../server/process/proc.ts";
import { dataAccess, json, jsonOf, stateOf } from "./helpers/args.ts";
import { isAlive } from "./helpers/processes.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await t?.close();
  t = undefined;
});

const misbehave = { module: fixture("misbehave.ts") };

async function start(engine: Record<string, unknown>, plugins: object[] = [misbehave]) {
  t = await startTestServer({ engine, plugins });
  const modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
  return { t, modelId };
}

async function predictPid(t: TestServer, modelId: string): Promise<number> {
  const action = (await t.engine.predict({ modelId, kwargs: { mode: json("pid") }, wait: true })).action!;
  expect(action.status).toBe(ActionStatus.SUCCEEDED);
  return jsonOf(action.result?.prediction) as number;
}

/** Waits until `condition` holds: the operating system changes a process's state on its own clock. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe("warm workers", () => {
  it("serve the next call of their plugin module from the same process", async () => {
    const { t, modelId } = await start({});
    const first = await predictPid(t, modelId);
    expect(await predictPid(t, modelId)).toBe(first);
    expect(await predictPid(t, modelId)).toBe(first);
    expect(isAlive(first)).toBe(true);
  });

  it("run the SDK and the plugin built as plain JavaScript, with no TypeScript loader on any thread", async () => {
    const { t, modelId } = await start({});
    const pid = await predictPid(t, modelId);
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const [entry, plugin] = args.filter((arg) => arg.endsWith(".mjs"));
    expect(entry).toMatch(/node_modules\/\.cache\/plinth\/node-child-[0-9a-f]{16}\/node\.mjs$/);
    expect(plugin).toMatch(/\/plinth-plugins-\d+-\w+\/[0-9a-f]{16}\.mjs$/);
    expect(args.some((arg) => arg.includes("tsx"))).toBe(false);
  });

  it("a warm child that stopped itself (SIGSTOP) is not given the next call: it is killed and a new child serves it", async () => {
    const { t, modelId } = await start({ max_children: 1 });
    // Every exit from the start: the server's periodic check (check_children_period) may
    // kill the stopped child before this test ever sees it stopped, or before the next call.
    const exited = new Set<number>();
    t.server.processes.events.on("exit", (pid: number) => exited.add(pid));
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("stop_self") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    const stopped = jsonOf(action.result?.prediction) as number;
    await until(() => exited.has(stopped) || procStat(stopped)?.state === "T");
    expect(await predictPid(t, modelId)).not.toBe(stopped);
    await until(() => exited.has(stopped));
    expect(isAlive(stopped)).toBe(false);
  });

  it("with reuse_workers off, every call gets its own process and none stays", async () => {
    const { t, modelId } = await start({ reuse_workers: false });
    const first = await predictPid(t, modelId);
    const second = await predictPid(t, modelId);
    expect(second).not.toBe(first);
    expect(t.server.processes.live).toBe(0);
  });

  it("retire after max_calls_per_worker calls", async () => {
    const { t, modelId } = await start({ max_calls_per_worker: 2 });
    // The create call was the first on its worker; one more, then a new worker.
    const a = await predictPid(t, modelId);
    const b = await predictPid(t, modelId);
    const c = await predictPid(t, modelId);
    expect(b).not.toBe(a);
    expect(c).toBe(b);
  });

  it("serve on after their plugin threw, and after a cancel the plugin answered; one that did not answer in time is not reused", async () => {
    // The grace and sigterm_timeout far above a busy machine's delays: the stops below need no SIGKILL.
    const { t, modelId } = await start({ sigterm_timeout: 30, cancel_grace_seconds: 30 });
    const before = await predictPid(t, modelId);
    const failed = (await t.engine.predict({ modelId, kwargs: { mode: json("throw") }, wait: true })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    const after = await predictPid(t, modelId);
    expect(after).toBe(before);

    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") } });
    await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
    // Told over the pipe, the cooperative plugin aborted: no signal, and its child serves on.
    expect(cancelled.cancel).toMatchObject({
      by: "CancelAction",
      phase: ActionStatus.EXECUTING,
      forced: false,
      exitCode: 0,
      signal: "",
      childKept: true,
    });
    expect(await predictPid(t, modelId)).toBe(after);

    // With no grace the cancel is SIGTERM, as before it was a message: the child exits and is replaced.
    await t.close();
    const { t: strict, modelId: other } = await start({ sigterm_timeout: 30, cancel_grace_seconds: 0 });
    const first = await predictPid(strict, other);
    const { action: next } = await strict.engine.predict({ modelId: other, kwargs: { mode: json("cooperative") } });
    await watchActions(strict, (v) => stateOf(v.get(next!.id)?.state) !== null);
    const stopped = (await strict.actions.cancelAction({ actionId: next!.id })).action!;
    expect(stopped.cancel).toMatchObject({ forced: false, exitCode: 143, signal: "", childKept: false });
    expect(await predictPid(strict, other)).not.toBe(first);
  });

  it("retire when idle longer than idle_worker_timeout, down to min_idle_workers", async () => {
    const { t, modelId } = await start({ idle_worker_timeout: 0.3, min_idle_workers: 0 });
    const pid = await predictPid(t, modelId);
    // Wait for that child's exit (an earlier idle child may retire first on a slow machine).
    for (;;) {
      const [gone] = await once(t.server.processes.events, "exit");
      if (gone === pid) break;
    }
    expect(t.server.processes.live).toBe(0);
  });

  it("min_idle_workers are started with the server", async () => {
    t = await startTestServer({ engine: { min_idle_workers: 2, max_children: 8 }, plugins: [misbehave, { module: "plugins/system-test/mod.ts" }] });
    expect(t.server.processes.idle).toBe(4);
    expect(t.server.processes.live).toBe(4);
  });

  it("idle and busy workers both count against max_children: idle ones of another module give way", async () => {
    t = await startTestServer({ engine: { max_children: 2 }, plugins: [misbehave, { module: "plugins/system-test/mod.ts" }] });
    // One idle worker per module from the start: the two slots are taken.
    expect(t.server.processes.live).toBe(2);
    let most = 0;
    t.server.processes.events.on("spawn", () => (most = Math.max(most, t!.server.processes.live)));
    const models: string[] = [];
    for (let i = 0; i < 2; i++) models.push((await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId);
    // Two long calls at once on the misbehave module: the systest worker is evicted to make room.
    const ids: string[] = [];
    for (const modelId of models) ids.push((await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") } })).action!.id);
    const view = await watchActions(t, (v) => ids.every((id) => stateOf(v.get(id)?.state) !== null));
    const pids = ids.map((id) => (stateOf(view.get(id)!.state) as { pid: number }).pid);
    expect(new Set(pids).size).toBe(2);
    expect(most).toBeLessThanOrEqual(2);
    expect(t.server.processes.live).toBe(2);
    expect(t.server.processes.idle).toBe(0);
    await Promise.all(ids.map((actionId) => t!.actions.cancelAction({ actionId })));
  });
});

describe("process groups", () => {
  it("a cancelled plugin's subprocess dies with it: neither process survives", async () => {
    const { t, modelId } = await start({ sigterm_timeout: 0.5 });
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("spawn_sleep") } });
    const view = await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const { sleeper, pid } = stateOf(view.get(action!.id)!.state) as { sleeper: number; pid: number };
    expect(isAlive(sleeper) && isAlive(pid)).toBe(true);
    await t.actions.cancelAction({ actionId: action!.id });
    expect(isAlive(pid)).toBe(false);
    expect(isAlive(sleeper)).toBe(false);
  });
});

describe("reconciliation", () => {
  it("a child that vanished without an exit event fails its call and frees its slot", async () => {
    const { t, modelId } = await start({ max_children: 1, check_children_period: 0.1 });
    const victim = await predictPid(t, modelId);
    // Node never tells us about this child's exit: as if the event were lost.
    const emit = ChildProcess.prototype.emit;
    vi.spyOn(ChildProcess.prototype, "emit").mockImplementation(function (this: ChildProcess, event, ...args) {
      return (event as string) === "exit" && this.pid === victim ? false : emit.call(this, event, ...args);
    });
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") } });
    await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    process.kill(victim, "SIGKILL");
    const failed = (await t.actions.waitAction({ actionId: action!.id })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    // Its only slot is free again: the next call runs.
    vi.restoreAllMocks();
    expect(await predictPid(t, modelId)).not.toBe(victim);
  });
});

describe("backpressure", () => {
  it("refuses an action beyond max_queue with RESOURCE_EXHAUSTED, and shows queue positions", async () => {
    const { t } = await start({ max_children: 1, max_queue: 2, min_idle_workers: 0 });
    const models = [];
    for (let i = 0; i < 3; i++) models.push((await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId);
    const running = (await t.engine.predict({ modelId: models[0]!, kwargs: { mode: json("cooperative") } })).action!;
    await watchActions(t, (v) => v.get(running.id)?.status === ActionStatus.EXECUTING);
    const q1 = (await t.engine.predict({ modelId: models[1]!, kwargs: { mode: json("cooperative") } })).action!;
    const q2 = (await t.engine.predict({ modelId: models[2]!, kwargs: { mode: json("cooperative") } })).action!;
    expect([q1.queuePosition, q2.queuePosition]).toEqual([1, 2]);
    const refused = await t.engine.predict({ modelId: models[0]!, kwargs: { mode: json("pid") } }).catch((e: { code: Status; details: string }) => e);
    expect(refused).toMatchObject({
      code: Status.RESOURCE_EXHAUSTED,
      details: "the queue is full: 2 actions are waiting (queued or accessing data) and engine.max_queue is 2; retry later",
    });
    // The first queued one leaves the queue: the second moves up.
    await t.actions.cancelAction({ actionId: q1.id });
    expect((await t.actions.getAction({ actionId: q2.id })).action!.queuePosition).toBe(1);
    await Promise.all([running, q2].map((a) => t.actions.cancelAction({ actionId: a.id })));
  });
});

describe("deadlines", () => {
  it("a running action past its timeout is stopped and fails with a deadline reason", async () => {
    const { t, modelId } = await start({ sigterm_timeout: 30 });
    const started = performance.now();
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") }, timeout: { seconds: 1n, nanos: 0 }, wait: true }))
      .action!;
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error).toMatchObject({ code: "deadline_exceeded", message: "the action did not end within its timeout of 1 s" });
    expect(action.cancel).toMatchObject({ by: "timeout", phase: ActionStatus.EXECUTING, forced: false });
  });

  it("a queued action past its timeout fails without ever running", async () => {
    const { t } = await start({ max_children: 1, min_idle_workers: 0 });
    const a = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    const b = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    const busy = (await t.engine.predict({ modelId: a, kwargs: { mode: json("cooperative") } })).action!;
    await watchActions(t, (v) => v.get(busy.id)?.status === ActionStatus.EXECUTING);
    const late = (await t.engine.predict({ modelId: b, timeout: { seconds: 0n, nanos: 300_000_000 }, wait: true })).action!;
    expect(late.status).toBe(ActionStatus.FAILED);
    expect(late.cancel).toMatchObject({ by: "timeout", phase: ActionStatus.QUEUED });
    await t.actions.cancelAction({ actionId: busy.id });
  });

  it("rejects a timeout that is not positive", async () => {
    const { t, modelId } = await start({});
    await expect(t.engine.predict({ modelId, timeout: { seconds: -1n, nanos: 0 } })).rejects.toThrow(/timeout: must be between 1 ms and 24 days/);
  });
});

describe("a misbehaving child fails only its own call, with a precise error, and frees its slot", () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["garbage on the protocol channel", { mode: json("garbage") }, /broke the protocol: frame of \d+ bytes exceeds the limit|broke the protocol/],
    [
      "a frame over max_frame_bytes",
      { mode: json("huge"), size: json(300_000) },
      /broke the protocol: frame of \d+ bytes exceeds the limit of 262144 bytes/,
    ],
    ["stdout closed early", { mode: json("close_stdout") }, /closed its stdout/],
  ];
  it.each(cases)("%s", async (_name, kwargs, message) => {
    const { t, modelId } = await start({ max_children: 1, max_frame_bytes: 262144 });
    const action = (await t.engine.predict({ modelId, kwargs: kwargs as never, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("protocol_error");
    expect(action.error?.message).toMatch(message);
    // The one slot is free again and the server goes on.
    expect(await predictPid(t, modelId)).toBeGreaterThan(0);
  });

  it("a crash in the module load fails the call that needed it", async () => {
    const flag = join(tempDir(), "broken");
    process.env.PLINTH_TEST_BREAK_LOAD = flag;
    try {
      t = await startTestServer({
        engine: { reuse_workers: false },
        plugins: [misbehave, { module: fixture("load-switch.ts"), env: ["PLINTH_TEST_BREAK_LOAD"] }],
      });
      const modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
      writeFileSync(flag, "");
      const action = (await t.engine.predict({ modelId, args: [dataAccess("loadswitch.pid")], wait: true })).action!;
      expect(action.status).toBe(ActionStatus.FAILED);
      expect(action.error?.code).toBe("data_access_failed");
      expect(action.error?.message).toMatch(/failed to load: Error: the module load crashed on purpose/);
      expect(await predictPid(t, modelId)).toBeGreaterThan(0);
    } finally {
      delete process.env.PLINTH_TEST_BREAK_LOAD;
    }
  });

  it("with progress_interval 0, a WatchAction stream gets every report in order, even 300 made at once; by default it gets the latest", async () => {
    const reportsSeen = async (engine: Record<string, unknown>) => {
      const { t, modelId } = await start(engine);
      // Queued behind a call on its model until the stream is open, so that it sees every report.
      const { action: first } = await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") } });
      const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("count"), n: json(300) } });
      const seen: number[] = [];
      let open = false;
      for await (const update of t.actions.watchAction({ actionId: action!.id })) {
        if (!open) {
          open = true;
          await t.actions.cancelAction({ actionId: first!.id });
        }
        const i = (stateOf(update.action?.state) as { i?: number } | null)?.i;
        if (i !== undefined && i !== seen.at(-1)) seen.push(i);
      }
      await t.close();
      return seen;
    };
    expect(await reportsSeen({ progress_interval: 0 })).toEqual(Array.from({ length: 300 }, (_, k) => k + 1));
    const coalesced = await reportsSeen({});
    expect(coalesced.at(-1)).toBe(300);
    expect(coalesced.length).toBeLessThan(300);
  });

  it("a report() flood costs a bounded number of revisions, and the last state arrives", async () => {
    const { t, modelId } = await start({});
    let revisions = 0;
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("flood"), seconds: json(2) } });
    const unsubscribe = t.server.engine.subscribe((e) => {
      if (e.kind === "action_upserted" && e.action.id === action!.id) revisions++;
    });
    const rssBefore = process.memoryUsage().rss;
    const done = (await t.actions.waitAction({ actionId: action!.id })).action!;
    unsubscribe();
    const reports = jsonOf(done.result?.prediction) as number;
    // Hundreds of thousands of reports; at most one revision per 50 ms, plus the status changes.
    expect(reports).toBeGreaterThan(50_000);
    expect(revisions).toBeLessThan(2000 / 50 + 10);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(100 * 1024 * 1024);
  });
});
