/**
 * A server that always stops: every way a user or a supervisor stops `npm start` —
 * SIGTERM to npm's pid, to the process group, Ctrl-C (SIGINT to the group), twice to
 * the server — ends it with its running action cancelled (not interrupted) and no child
 * left, even one that ignores SIGTERM. (How long that takes, against the README's
 * sigterm_timeout + 2 s, is measured by `npm run bench:process`.) And it starts in
 * order: the port opens last, once the plugins are loaded.
 */
import { once } from "node:events";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, stateOf } from "./helpers/args.ts";
import { isAlive, isPluginChild, processes } from "./helpers/processes.ts";
import { fixture } from "./helpers/server.ts";
import { clients, descendantsOf, type ServerProcess, startBundledProcess, startNpm, startProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const started: ServerProcess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) {
    // Whatever a failed test left: the group (npm's), then anything below.
    for (const pid of descendantsOf(p.child.pid!)) if (isAlive(pid)) process.kill(pid, "SIGKILL");
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  }
});

const SIGTERM_TIMEOUT_S = 1;

function config(extra = ""): string {
  const dir = tempDir();
  return writeConfig(
    [
      "backend:",
      `  path: ${join(dir, "plinth.db")}`,
      "engine:",
      `  sigterm_timeout: ${SIGTERM_TIMEOUT_S}`,
      "plugins:",
      `  - module: ${fixture("misbehave.ts")}`,
      extra,
    ].join("\n"),
    dir,
  );
}

/** `npm start` with a plugin that ignores SIGTERM running, and a client watching it. */
async function busyNpmStart() {
  const p = startNpm(["--config", config(), "--address", "127.0.0.1:0"]);
  started.push(p);
  const c = clients(await p.port);
  const modelId = (await c.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
  const { action } = await c.engine.predict({ modelId, kwargs: { mode: json("ignore_sigterm") } });
  const updates = c.actions.watchAction({ actionId: action!.id })[Symbol.asyncIterator]();
  for (;;) {
    const next = await updates.next();
    if (next.done || (stateOf(next.value.action!.state) as { pid?: number } | null)?.pid) break;
  }
  // The stream stays open: its last message is the action as the stop ended it.
  const waiting = (async () => {
    let last = action!;
    for (let next = await updates.next(); !next.done; next = await updates.next()) last = next.value.action!;
    return { action: last };
  })();
  // npm, the server (node, npm's child) and the plugin children below it.
  const below = descendantsOf(p.child.pid!);
  const all = processes();
  const server = all.find((q) => q.ppid === p.child.pid && q.cmdline.includes("server/main.ts"))!;
  expect(below).toContain(server.pid);
  expect(below.filter((pid) => isPluginChild(all.find((q) => q.pid === pid)?.cmdline ?? "")).length).toBeGreaterThanOrEqual(1);
  return { p, c, waiting, below, server: server.pid };
}

/** Waits until npm has exited and nothing it started is left (the bound only catches "never"). */
async function stopped(busy: Awaited<ReturnType<typeof busyNpmStart>>): Promise<void> {
  if (busy.p.child.exitCode === null && busy.p.child.signalCode === null) await once(busy.p.child, "exit");
  await expect.poll(() => busy.below.filter(isAlive), { timeout: 30_000 }).toEqual([]);
}

async function expectOrderlyStop(busy: Awaited<ReturnType<typeof busyNpmStart>>) {
  await stopped(busy);
  // The client waiting on the action got it back, cancelled by the stop: not left to a
  // restart to mark it interrupted.
  const action = (await busy.waiting).action!;
  expect(action.status).toBe(ActionStatus.CANCELLED);
  expect(action.cancel).toMatchObject({ by: "shutdown", forced: true });
  expect(busy.p.output()).toContain('"msg":"stopped"');
  busy.c.channel.close();
}

describe("npm start stops, whatever is signalled, with no child left", () => {
  it("SIGTERM to npm's pid", async () => {
    const busy = await busyNpmStart();
    process.kill(busy.p.child.pid!, "SIGTERM");
    await expectOrderlyStop(busy);
  });

  it("SIGTERM to the process group (kill -- -PGID)", async () => {
    const busy = await busyNpmStart();
    process.kill(-busy.p.child.pid!, "SIGTERM");
    await expectOrderlyStop(busy);
  });

  it("Ctrl-C: SIGINT to the process group", async () => {
    const busy = await busyNpmStart();
    process.kill(-busy.p.child.pid!, "SIGINT");
    await expectOrderlyStop(busy);
  });

  it("SIGTERM twice to the server, a second apart: the second hurries the stop but skips nothing", async () => {
    const busy = await busyNpmStart();
    process.kill(busy.server, "SIGTERM");
    await new Promise((r) => setTimeout(r, 1100));
    if (isAlive(busy.server)) process.kill(busy.server, "SIGTERM");
    await expectOrderlyStop(busy);
  });
});

describe("a stop with nothing running", () => {
  it("ends with an idle client connected, and starts no child while stopping", async () => {
    const p = startBundledProcess(["--config", config(), "--address", "127.0.0.1:0", "--log-level", "debug"]);
    started.push(p);
    const c = clients(await p.port);
    // A call makes the connection; the client keeps it open, idle.
    const modelId = (await c.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
    expect((await c.engine.predict({ modelId, wait: true })).action!.status).toBe(ActionStatus.SUCCEEDED);
    // The client keeps its connection open until after the exit: a server that waited
    // for its idle clients would never get there.
    p.child.kill("SIGTERM");
    await once(p.child, "exit");
    const stopping = p.output().slice(p.output().indexOf('"msg":"stopping"'));
    expect(stopping).not.toContain("plugin child started");
    c.channel.close();
  });
});

describe("starting in order", () => {
  it("opens the port only once the plugins are loaded", async () => {
    const port = await freePort();
    const dir = tempDir();
    const slow = join(dir, "slow.mts");
    const loading = join(dir, "loading");
    const release = join(dir, "release");
    // A plugin that says when its module starts loading, then loads only once the test lets it.
    writeFileSync(
      slow,
      [
        `import { existsSync, writeFileSync } from "node:fs";`,
        `import { definePlugin } from "${join(fixture(".."), "../../sdk/mod.ts")}";`,
        `writeFileSync(${JSON.stringify(loading)}, "");`,
        `while (!existsSync(${JSON.stringify(release)})) await new Promise((r) => setTimeout(r, 20));`,
        `export default definePlugin({ name: "slow" });`,
      ].join("\n"),
    );
    const p = startBundledProcess([
      "--config",
      writeConfig(`backend:\n  path: ${join(dir, "plinth.db")}\nplugins:\n  - module: ${slow}\n`, dir),
      "--address",
      `127.0.0.1:${port}`,
    ]);
    started.push(p);
    while (!existsSync(loading)) await new Promise((r) => setTimeout(r, 20));
    // While the plugins load, nothing listens.
    for (let i = 0; i < 5; i++) {
      expect(await canConnect(port)).toBe(false);
      await new Promise((r) => setTimeout(r, 100));
    }
    writeFileSync(release, "");
    expect(await p.port).toBe(port);
    expect(await canConnect(port)).toBe(true);
  });

  it("--help names the embedded default: the example plugins and ./data/plinth.db", async () => {
    const p = startProcess(["--help"]);
    await once(p.child, "exit");
    expect(p.output()).toContain("./data/plinth.db");
    expect(p.output()).not.toContain("in-memory");
  });

  it("refuses a damaged database, saying which and what to do", async () => {
    const dir = tempDir();
    const path = join(dir, "plinth.db");
    const db = new Database(path);
    db.exec("CREATE TABLE filler (x TEXT); INSERT INTO filler VALUES (randomblob(20000))");
    db.close();
    // Garbage over the schema (page 1, past the header): SQLite opens the file, then finds it malformed.
    const bytes = readFileSync(path);
    bytes.fill(0xa5, 100, 4096);
    writeFileSync(path, bytes);
    const p = startBundledProcess([
      "--config",
      writeConfig(`backend:\n  path: ${path}\nplugins:\n  - module: ${fixture("misbehave.ts")}\n`, dir),
      "--address",
      "127.0.0.1:0",
    ]);
    started.push(p);
    await expect(p.port).rejects.toThrow(/exited with 1/);
    expect(p.output()).toContain(`config backend.path: ${path} is damaged`);
    expect(p.output()).toContain("restore the file from a backup");
    expect(p.output()).not.toContain("SqliteError");
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.connect(port, "127.0.0.1");
  });
}
