/**
 * `npm run bench:store`: the SQLite store's figures, each beside a baseline from the
 * same run — start-up with 10,000 stored models against an empty database,
 * event-loop lag under 1,000 writes/s against the memory backend, AddInstance
 * throughput for both synchronous modes against memory.
 */
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startServer } from "../server/app.ts";
import { parseConfig } from "../server/config/load.ts";
import { SqliteStore } from "../server/store/sqlite.ts";
import { printTable } from "./report.ts";
import { startProcess } from "./servers.ts";
import { tempDir } from "./temp.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const quick = process.argv.includes("--quick");
const logger = pino({ level: "silent" });
const plugins = [{ module: join(root, "bench/plugins/trivial.ts") }];
const newDb = () => join(tempDir("plinth-bench-db-"), "plinth.db");

/** Spawns the server process on `path` and returns the ms until it logs "serving". */
async function startupMs(path: string): Promise<number> {
  const started = performance.now();
  const server = await startProcess(["server/main.ts", "--address", "127.0.0.1:0", "--config", await configFile(path)], /"msg":"serving"/);
  const ms = performance.now() - started;
  const exited = once(server.child, "exit");
  server.child.kill("SIGTERM");
  await exited;
  return ms;
}

async function configFile(path: string): Promise<string> {
  const file = join(tempDir("plinth-bench-cfg-"), "plinth.yaml");
  writeFileSync(file, `backend:\n  path: ${path}\nplugins:\n  - module: ${plugins[0]!.module}\n`);
  return file;
}

/**
 * Runs bench/writer.ts in another process against `port`; calls onStart when the
 * load begins and resolves with what the writer reports.
 */
function writer(port: number, args: string[], onStart = () => {}): Promise<{ done: number; seconds: number }> {
  const child: ChildProcess = fork(join(root, "bench/writer.ts"), [String(port), ...args], {
    execArgv: ["--import", "tsx"],
    cwd: root,
  });
  return new Promise((resolve, reject) => {
    child.on("message", (m) => {
      if (m === "ready") {
        onStart();
        child.send("go");
      } else resolve(m as { done: number; seconds: number });
    });
    child.once("exit", (code) => (code === 0 ? undefined : reject(new Error(`writer exited with ${code}`))));
  });
}

async function inProcess(backend: Record<string, unknown>) {
  const config = parseConfig({ server: { address: "127.0.0.1:0" }, backend, plugins }, root);
  return startServer(config, logger);
}

/** Event-loop lag of a server taking `rate` AddInstance/s for `seconds`, measured in a fresh process. */
async function lagUnderWrites(backend: Record<string, unknown>, rate: number, seconds: number) {
  const child = fork(join(root, "bench/lag-probe.ts"), [JSON.stringify(backend), String(rate), String(seconds)], {
    execArgv: ["--import", "tsx"],
    cwd: root,
    stdio: ["ignore", "pipe", "inherit", "ipc"],
  });
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const [code] = await once(child, "exit");
  if (code !== 0) throw new Error(`lag probe exited with ${code}`);
  return JSON.parse(out) as { p99: number; max: number; achieved: number };
}

async function throughput(backend: Record<string, unknown>, seconds: number) {
  const server = await inProcess(backend);
  const result = await writer(server.port, ["flood", "64", String(seconds)]);
  await server.close();
  return result.done / result.seconds;
}

const rows: string[][] = [];
const row = (...cells: string[]) => {
  rows.push(cells);
  console.error(`  ${cells[0]}: ${cells[1]}`);
};
console.error(`measuring (${quick ? "quick" : "full"} run)…`);

// Start-up: 10,000 stored models against an empty database.
const full = newDb();
const store = new SqliteStore({ path: full, synchronous: "normal", keepRevisions: 5, maxActions: 100000, maxActionAgeMs: 1e12 });
const now = new Date();
for (let i = 0; i < 10_000; i++) {
  const id = `m-bench${String(i).padStart(6, "0")}`;
  await store.putModel({
    id,
    modelType: "bench.Trivial",
    revision: 1n,
    oldestRevision: 1n,
    createTime: now,
    updateTime: now,
    instance: new Uint8Array(1024),
    instanceSize: 1024,
    actionId: "",
  });
}
await store.close();
const emptyStart = await startupMs(newDb());
const fullStart = await startupMs(full);
row("start to SERVING, 10,000 stored models", `${fullStart.toFixed(0)} ms`, `empty database: ${emptyStart.toFixed(0)} ms`, "< 2,000 ms");

const seconds = quick ? 2 : 5;
const sqliteLag = await lagUnderWrites({ path: newDb() }, 1000, seconds);
const memoryLag = await lagUnderWrites({ kind: "memory" }, 1000, seconds);
row(
  "event-loop lag p99 / max, 1,000 AddInstance/s (sqlite)",
  `${sqliteLag.p99.toFixed(1)} ms / ${sqliteLag.max.toFixed(1)} ms (${sqliteLag.achieved.toFixed(0)} writes/s)`,
  `memory backend: ${memoryLag.p99.toFixed(1)} ms / ${memoryLag.max.toFixed(1)} ms`,
  "p99 < 20 ms",
);

const tSeconds = quick ? 2 : 4;
const normal = await throughput({ path: newDb() }, tSeconds);
const fsync = await throughput({ path: newDb(), synchronous: "full" }, tSeconds);
const memory = await throughput({ kind: "memory" }, tSeconds);
row("AddInstance/s, 64 in flight, sqlite synchronous=normal", normal.toFixed(0), `memory backend: ${memory.toFixed(0)}`, "");
row("AddInstance/s, 64 in flight, sqlite synchronous=full", fsync.toFixed(0), `memory backend: ${memory.toFixed(0)}`, "");

printTable(["what", "plinth", "baseline (same run)", "target"], rows);
