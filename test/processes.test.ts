/**
 * Processes that always die: no signal to pid 1, every descendant of a plugin child
 * killed with it (setsid included), one live server per database, a child that ends
 * by itself when the server is gone, a memory bound per plugin, CPU-bound plugins that
 * report and stop.
 */
import { once } from "node:events";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PluginChild } from "../server/process/child.ts";
import { dataAccess, json, jsonOf, stateOf } from "./helpers/args.ts";
import { isAlive } from "./helpers/processes.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { clients, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { expectSpinReportsAndStops } from "./helpers/spin.ts";
import { tempDir } from "./helpers/temp.ts";
import { watchActions } from "./helpers/watch.ts";

let servers: TestServer[] = [];
const processes: ServerProcess[] = [];
const strays: number[] = [];
afterEach(async () => {
  for (const t of servers.splice(0)) await t.close();
  for (const p of processes.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  // A test that failed may leave a sleep behind: it is ours, end it.
  for (const pid of strays.splice(0)) if (isAlive(pid)) process.kill(pid, "SIGKILL");
});

async function server(config: Record<string, unknown> = {}) {
  const t = await startTestServer({ plugins: [{ module: fixture("misbehave.ts") }], engine: { sigterm_timeout: 1 }, ...config });
  servers.push(t);
  const modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
  return { t, modelId };
}

/**
 * Polls until `condition` holds, up to `ms`; the processes here change state on their own
 * clock. The bounds only catch "never": they are far above a busy machine's delays.
 */
async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return condition();
}

/** The first state of an action that has `key`, read from WatchState. */
async function stateWith<T>(t: TestServer, actionId: string, key: string): Promise<T> {
  const view = await watchActions(t, (v) => (stateOf(v.get(actionId)?.state) as Record<string, unknown> | null)?.[key] !== undefined);
  return stateOf(view.get(actionId)!.state) as T;
}

interface Escaping {
  pid: number;
  inGroup: number;
  escaped: number;
}

describe("a plugin child's descendants die with it", () => {
  it("on cancel: the grandchild in its group and the one in a session of its own (setsid)", async () => {
    const { t, modelId } = await server();
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("spawn_escaping") } });
    const { pid, inGroup, escaped } = await stateWith<Escaping>(t, action!.id, "escaped");
    strays.push(inGroup, escaped);
    expect([pid, inGroup, escaped].every(isAlive)).toBe(true);
    await t.actions.cancelAction({ actionId: action!.id });
    expect(await until(() => ![pid, inGroup, escaped].some(isAlive), 30_000)).toBe(true);
  });

  it("when its call succeeds and the child stays warm: below the child, without the mark, or out of the tree with it", async () => {
    const { t, modelId } = await server();
    const done = (await t.engine.predict({ modelId, kwargs: { mode: json("spawn_and_return") }, wait: true })).action!;
    expect(done.status).toBe(ActionStatus.SUCCEEDED);
    const { pid, below, unmarked, orphaned } = jsonOf(done.result?.prediction) as Record<string, number>;
    strays.push(below!, unmarked!, orphaned!);
    expect(await until(() => ![below!, unmarked!, orphaned!].some(isAlive), 30_000)).toBe(true);
    // The child itself stays warm and serves the next call.
    const next = (await t.engine.predict({ modelId, kwargs: { mode: json("pid") }, wait: true })).action!;
    expect(jsonOf(next.result?.prediction)).toBe(pid);
  });

  it("when the child exits on its own, leaving both behind", async () => {
    const { t, modelId } = await server();
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("spawn_escaping"), after: json("exit") } });
    const { inGroup, escaped } = await stateWith<Escaping>(t, action!.id, "escaped");
    strays.push(inGroup, escaped);
    const ended = (await t.actions.waitAction({ actionId: action!.id })).action!;
    expect(ended.error?.message).toMatch(/exited with code 5/);
    expect(await until(() => !isAlive(inGroup) && !isAlive(escaped), 30_000)).toBe(true);
  });

  it("when the server stops", async () => {
    const { t, modelId } = await server();
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("spawn_escaping") } });
    const { pid, inGroup, escaped } = await stateWith<Escaping>(t, action!.id, "escaped");
    strays.push(inGroup, escaped);
    await t.close();
    servers = [];
    expect([pid, inGroup, escaped].filter(isAlive)).toEqual([]);
  });

  it("after a crash: the child stops within a second of its input closing, busy or not, and the next start kills what it started", async () => {
    const path = join(tempDir(), "plinth.db");
    const config = writeConfig(`backend:\n  path: ${path}\nengine:\n  sigterm_timeout: 1\nplugins:\n  - module: ${fixture("misbehave.ts")}\n`);
    const first = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
    processes.push(first);
    const a = clients(await first.port);
    const modelId = (await a.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    const other = (await a.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    const pidOf = async (actionId: string, key: string) => {
      for await (const update of a.actions.watchAction({ actionId })) {
        const state = stateOf(update.action!.state) as Record<string, number> | null;
        if (state?.[key]) return state as unknown as Escaping;
      }
      throw new Error("the action ended first");
    };
    const spawner = (await a.engine.predict({ modelId, kwargs: { mode: json("spawn_escaping") } })).action!;
    const spinner = (await a.engine.predict({ modelId: other, kwargs: { mode: json("spin_forever") } })).action!;
    const { pid, inGroup, escaped } = await pidOf(spawner.id, "escaped");
    const { pid: spinning } = await pidOf(spinner.id, "pid");
    strays.push(inGroup, escaped);
    a.channel.close();
    first.child.kill("SIGKILL");
    await once(first.child, "exit");
    // Both children notice their input closed; even the one spinning in a loop goes.
    expect(await until(() => !isAlive(pid) && !isAlive(spinning), 30_000)).toBe(true);
    // What they started outlives them, orphaned...
    expect([inGroup, escaped].every(isAlive)).toBe(true);
    // ...until the next server of this database starts.
    const second = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
    processes.push(second);
    await second.port;
    expect([inGroup, escaped].filter(isAlive)).toEqual([]);
    expect(second.output()).toContain("killed plugin children left running by a previous server");
    second.child.kill("SIGTERM");
    await once(second.child, "exit");
  });
});

describe("a child being stopped", () => {
  it("that closes its stdout on SIGTERM and takes a while to exit broke no protocol: its exit tells the story", async () => {
    // SIGTERM: stdout closed at once, the exit a second later (past the grace a child that
    // closes its stdout on its own gets before that counts as a broken protocol).
    const ready = join(tempDir(), "trapped");
    const script = `trap "exec 1>&-; sleep 1; exit 0" TERM; touch ${ready}; sleep 30 & wait`;
    const child = new PluginChild({
      command: { file: "/bin/sh", args: ["-c", script], env: {} },
      mark: "test.closing",
      maxFrameBytes: 1024,
      logTailLines: 10,
      label: "closing child",
    });
    // Its trap set: the SIGTERM reaches it, not the shell's default.
    await expect.poll(() => existsSync(ready), { timeout: 60_000 }).toBe(true);
    const exit = await child.terminate(10_000);
    expect(exit).toMatchObject({ code: 0, terminated: true, forced: false, protocolError: false });
  });
});

describe("no signal ever goes to pid 1 or below", () => {
  it("a child whose spawn failed is an exit at once: stopping it signals nothing", async () => {
    const kill = vi.spyOn(process, "kill");
    try {
      const child = new PluginChild({
        command: { file: join(root, "no/such/runtime"), args: [], env: {} },
        mark: "test.spawn",
        maxFrameBytes: 1024,
        logTailLines: 10,
        label: "missing runtime",
      });
      expect(child.pid).toBe(0);
      // A cancel, timeout or shutdown landing before the spawn's error event.
      child.kill();
      const exit = await child.terminate(100);
      expect(exit.signal).toBeNull();
      await expect(child.hello()).rejects.toMatchObject({ code: "plugin_load_failed" });
      expect(kill.mock.calls.filter(([pid]) => Math.abs(pid) <= 1)).toEqual([]);
    } finally {
      kill.mockRestore();
    }
  });

  it("a runtime that cannot start stops the server at start with the key and the reason", async () => {
    await expect(
      startTestServer({ engine: { deno_binary: "/no/such/deno" }, plugins: [{ module: fixture("portable.ts"), runtime: "deno" }] }),
    ).rejects.toThrow(
      /^config plugins\[0\]\.module: plugin .*portable\.ts could not be started: \/no\/such\/deno: ENOENT: no such file or directory/,
    );
  });
});

describe("one live server per database", () => {
  it("a second server on the same file refuses to start, naming the file and the holder; the first keeps its children and serves on", async () => {
    const path = join(tempDir(), "plinth.db");
    const { t, modelId } = await server({ backend: { path } });
    const { action } = await t.engine.predict({ modelId, kwargs: { mode: json("cooperative") } });
    const { pid } = await stateWith<{ pid: number }>(t, action!.id, "pid");
    const config = writeConfig(`backend:\n  path: ${path}\nplugins:\n  - module: ${fixture("misbehave.ts")}\n`);
    const second = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
    processes.push(second);
    await expect(second.port).rejects.toThrow(/exited with 1/);
    expect(second.output()).toContain(`config backend.path: ${path} is in use by Plinth server pid ${process.pid}`);
    expect(isAlive(pid)).toBe(true);
    const another = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    expect((await t.engine.predict({ modelId: another, wait: true })).action!.status).toBe(ActionStatus.SUCCEEDED);
    await t.actions.cancelAction({ actionId: action!.id });
  });
});

describe("plugins[].max_memory_mb", () => {
  it("a plugin allocating past it fails its call with out_of_memory, and the next call gets a fresh child", async () => {
    const { t, modelId } = await server({ plugins: [{ module: fixture("misbehave.ts"), max_memory_mb: 256 }] });
    const failed = (await t.engine.predict({ modelId, kwargs: { mode: json("allocate"), mb: json(2048) }, wait: true })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    expect(failed.error?.code).toBe("out_of_memory");
    expect(failed.error?.message).toMatch(/ran out of memory \(plugins\[\]\.max_memory_mb\)/);
    const within = (await t.engine.predict({ modelId, kwargs: { mode: json("allocate"), mb: json(64) }, wait: true })).action!;
    expect(within.status).toBe(ActionStatus.SUCCEEDED);
  });

  it("a Node plugin that fills its JavaScript heap fails its call with out_of_memory, and the next call gets a fresh child", async () => {
    const t = await startTestServer({ plugins: [{ module: fixture("portable.ts"), max_memory_mb: 256 }] });
    servers.push(t);
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const failed = (await t.engine.predict({ modelId, args: [json("heap")], wait: true })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    expect(failed.error?.code).toBe("out_of_memory");
    expect(failed.error?.message).toMatch(/ran out of memory \(plugins\[\]\.max_memory_mb\): .*JS heap out of memory/);
    const next = (await t.engine.predict({ modelId, args: [json("x")], wait: true })).action!;
    expect(next.status).toBe(ActionStatus.SUCCEEDED);
  });

  it("a Deno plugin with the smallest limit (64) starts and serves; a call over it fails with out_of_memory", async () => {
    const t = await startTestServer({ plugins: [{ module: fixture("portable.ts"), runtime: "deno", max_memory_mb: 64 }] });
    servers.push(t);
    const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
    const within = (await t.engine.predict({ modelId, args: [json("allocate")], kwargs: { mb: json(32) }, wait: true })).action!;
    expect(within.status).toBe(ActionStatus.SUCCEEDED);
    for (const [args, kwargs] of [
      [[json("heap")], {}],
      [[json("allocate")], { mb: json(1024) }],
    ] as const) {
      const failed = (await t.engine.predict({ modelId, args: [...args], kwargs: { ...kwargs }, wait: true })).action!;
      expect(failed.error?.code).toBe("out_of_memory");
    }
  });
});

describe("a CPU-bound plugin (a synchronous loop) on Node", () => {
  it("reports progress as it runs and is cancelled cooperatively, at once", async () => {
    const t = await startTestServer({ plugins: [{ module: fixture("portable.ts") }], engine: { sigterm_timeout: 30, progress_interval: 0.05 } });
    servers.push(t);
    await expectSpinReportsAndStops(t);
  });
});

describe("data-access functions", () => {
  it("keep their log lines on their progress entry", async () => {
    const { t, modelId } = await server();
    const ok = (await t.engine.predict({ modelId, kwargs: { x: dataAccess("misbehave.log", [json("hello from data access")]) }, wait: true }))
      .action!;
    expect(ok.status).toBe(ActionStatus.SUCCEEDED);
    expect(ok.dataAccess[0]!.logTail).toEqual(["hello from data access", '{"level":"info","msg":"logged"}']);
    const failed = (await t.engine.predict({ modelId, args: [dataAccess("misbehave.fail")], wait: true })).action!;
    expect(failed.dataAccess[0]!.logTail).toContain("about to fail");
  });
});
