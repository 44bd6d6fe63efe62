/**
 * `npm run bench:peer`: BullMQ (a Redis job queue whose sandboxed processors run jobs in
 * child processes) beside Plinth on the same jobs, on this machine, in the same run, each
 * figure with its ratio.
 *
 * Both sides keep two warm child processes (Plinth `max_children: 2`; a BullMQ worker of
 * concurrency 2 forking its sandbox, bench/plugins/bullmq-worker.ts) running the same jobs
 * (bench/plugins/trivial.ts, bench/plugins/bullmq-processor.js). This bench starts its own
 * redis-server on a free port with a temporary folder and no persistence, and stops it.
 * Each measure runs Plinth then BullMQ, BullMQ first in the next round; the figures are
 * the medians of 3 rounds (1 with --quick). Servers run as their own processes; this
 * process is the client of both and its CPU is in neither's.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { WaitActionRequestSchema, WaitActionResponseSchema } from "../gen/plinth/v1/action_service_pb.ts";
import type { Arg } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { commandLine as procCommandLine } from "../server/process/proc.ts";
import { bytes, cancelMs, createModel, latencies, root, startPlinth, startReporting, stop, unary } from "./grpc-calls.ts";
import { batch, batchText } from "./json-batch.ts";
import { percentile, printTable, rssMiB } from "./report.ts";
import { startProcess } from "./servers.ts";
import { tempDir } from "./temp.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 1 : 3;
const LOAD_MS = quick ? 1000 : 3000;
const LATENCY_CALLS = quick ? 200 : 500;
const CANCELS = quick ? 5 : 15;
const IN_FLIGHT = 64;

// ---- processes: CPU and memory from /proc ----

const TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** Every process's parent and CPU ticks (user + system): its own, and its reaped children's. */
function processTable(): Map<number, { ppid: number; state: string; own: number; reaped: number }> {
  const table = new Map<number, { ppid: number; state: string; own: number; reaped: number }>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // After "pid (comm) ": state, ppid, … utime stime cutime cstime are fields 14–17.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    table.set(Number(name), { ppid: Number(f[1]), state: f[0]!, own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) });
  }
  return table;
}

function descendants(table: Map<number, { ppid: number }>, root: number): number[] {
  const found = [root];
  for (let i = 0; i < found.length; i++) for (const [pid, p] of table) if (p.ppid === found[i]) found.push(pid);
  return found;
}

/** CPU seconds of each of these processes, then of all their descendants, live and reaped. */
function treeCpu(roots: number[]): number[] {
  const table = processTable();
  const seconds = roots.map((root) => (table.get(root)?.own ?? 0) / TICKS);
  let children = 0;
  for (const root of roots) {
    children += table.get(root)?.reaped ?? 0;
    for (const pid of descendants(table, root).slice(1)) children += (table.get(pid)?.own ?? 0) + (table.get(pid)?.reaped ?? 0);
  }
  return [...seconds, children / TICKS];
}

/** A process's command line as one string (server/process/proc.ts's, joined). */
const commandLine = (pid: number): string => procCommandLine(pid).join(" ") || "(exited)";

/** The mean RSS of a process's two children (its warm plugin or sandbox children), MiB. */
async function childrenRss(parent: number): Promise<number> {
  // A third is a child being replaced (Plinth's max_calls_per_worker, say): wait for it to go.
  for (let tries = 0; ; tries++) {
    // Not a zombie: an exited child its parent has not reaped yet; nor tsx's esbuild
    // service, which a process running TypeScript may start beside its job children.
    const children = [...processTable()]
      .filter(([pid, p]) => p.ppid === parent && p.state !== "Z" && !commandLine(pid).includes("esbuild --service"))
      .map(([pid]) => pid);
    if (children.length === 2) return children.map(rssMiB).reduce((a, b) => a + b, 0) / 2;
    const list = children.map((pid) => `${pid}: ${commandLine(pid)}`).join("; ");
    if (tries === 20) throw new Error(`process ${parent} has ${children.length} children, not 2: ${list}`);
    console.error(`    process ${parent} has ${children.length} children, not 2 (${list}); again in 100 ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// ---- redis-server, ours alone ----

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Debian's redis-server on a free port, its folder temporary, nothing written to disk. */
async function startRedis(): Promise<{ child: ChildProcess; port: number; dir: string }> {
  const dir = tempDir("plinth-bench-redis-");
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let out = "";
  await new Promise<void>((resolve, reject) => {
    child.on("error", (e) => reject(new Error(`redis-server: ${e.message} (apt-get install redis-server)`)));
    child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${out}`)));
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("Ready to accept connections")) resolve();
    });
  });
  child.stdout!.resume();
  return { child, port, dir };
}

/** What this run started, killed if it ends without stopping them (an error, a signal). */
const children: ChildProcess[] = [];
process.once("exit", () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

// ---- the two sides ----

interface Side {
  name: string;
  /** A trivial job (echo 1), answered. */
  trivial(lane: number): Promise<void>;
  /** The 55 kB JSON job, echoed. */
  json(lane: number): Promise<void>;
  /** A job that looks at its signal every 10 ms, cancelled once its child runs it: ms until the client sees it ended. */
  cancel(): Promise<number>;
  /** The same job, its child killed (SIGKILL): ms until the client sees it failed. */
  crash(): Promise<number>;
  /** The processes whose CPU is the side's (its server, Redis), named; their children's is the side's too. */
  cpuRoots: Record<string, number>;
  /** The process whose children run the jobs. */
  parent: number;
}

async function plinthSide(): Promise<Side & { close(): Promise<void> }> {
  const plinth = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000 } });
  children.push(plinth.child);
  const { client } = plinth;
  const models = await Promise.all(Array.from({ length: IN_FLIGHT }, () => createModel(client, "bench.Trivial")));
  const poller = await createModel(client, "bench.Poller");
  const one = { kind: { case: "json" as const, value: { kind: { case: "numberValue" as const, value: 1 } } } };
  const trivial = models.map((modelId) => bytes(PredictRequestSchema, { modelId, args: [one], wait: true }));
  const json = models.map((modelId) =>
    bytes(PredictRequestSchema, { modelId, args: [{ kind: { case: "jsonText", value: batchText } }], wait: true }),
  );
  const predict = async (body: Uint8Array, check: (p: Arg | undefined) => boolean) => {
    const res = await unary(client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
    if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`plinth: predict failed: ${res.action?.error?.message}`);
    if (!check(res.action.result?.prediction)) throw new Error(`plinth: predict answered ${res.action.result?.prediction?.kind.case}`);
  };
  const isOne = (p: Arg | undefined) =>
    (p?.kind.case === "json" && p.kind.value.kind.value === 1) || (p?.kind.case === "jsonText" && p.kind.value === "1");
  const isBatch = (p: Arg | undefined) => p?.kind.case === "jsonText" && p.kind.value.length === batchText.length;
  /** A Poller's action, once its plugin runs it: its id and its child's pid. */
  const startPoller = async (): Promise<{ actionId: string; pid: number }> => {
    const { actionId, state } = await startReporting(client, poller);
    return { actionId, pid: (state as { pid: number }).pid };
  };
  return {
    name: "Plinth",
    trivial: (lane) => predict(trivial[lane]!, isOne),
    json: (lane) => predict(json[lane]!, isBatch),
    async cancel() {
      return cancelMs(client, (await startPoller()).actionId);
    },
    async crash() {
      const { actionId, pid } = await startPoller();
      const ended = unary(client, "/plinth.v1.ActionService/WaitAction", bytes(WaitActionRequestSchema, { actionId }), (b) =>
        fromBinary(WaitActionResponseSchema, b),
      );
      const start = performance.now();
      process.kill(pid, "SIGKILL");
      const res = await ended;
      if (res.action?.error?.code !== "plugin_exited")
        throw new Error(`plinth: a killed child: ${res.action?.error?.code} ${res.action?.error?.message}`);
      return performance.now() - start;
    },
    cpuRoots: { server: plinth.child.pid! },
    parent: plinth.child.pid!,
    close: () => plinth.stop(),
  };
}

async function bullmqSide(redis: { child: ChildProcess; port: number }): Promise<Side & { close(): Promise<void> }> {
  const worker = await startProcess(["bench/plugins/bullmq-worker.ts", String(redis.port)], /^ready\n/);
  children.push(worker.child);
  const connection = { host: "127.0.0.1", port: redis.port };
  // The events stream keeps the last 1,000 events (10,000 by default: 550 MB of 55 kB answers).
  const queue = new Queue("peer", { connection, streams: { events: { maxLen: 1000 } } });
  queue.setMaxListeners(0); // each waitUntilFinished listens for the queue's closing
  const events = new QueueEvents("peer", { connection });
  const cancels = new Redis(redis.port, "127.0.0.1");
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
  // Each poll job's child pid, from its first progress report.
  const pids = new Map<string, number>();
  const waiting = new Map<string, (pid: number) => void>();
  events.on("progress", ({ jobId, data }) => {
    const pid = (data as { pid: number }).pid;
    pids.set(jobId, pid);
    waiting.get(jobId)?.(pid);
  });
  const run = async (name: string, data: unknown) => (await queue.add(name, data)).waitUntilFinished(events);
  const startPoll = async () => {
    const job = await queue.add("poll", null);
    const id = job.id!;
    const pid = pids.get(id) ?? (await new Promise<number>((resolve) => waiting.set(id, resolve)));
    pids.delete(id);
    waiting.delete(id);
    // Failed, as the client sees it: the time, and the reason.
    const ended = job.waitUntilFinished(events).then(
      () => Promise.reject(new Error("bullmq: the poll job completed")),
      (e: Error) => ({ at: performance.now(), reason: e.message }),
    );
    return { id, pid, ended };
  };
  return {
    name: "BullMQ",
    async trivial() {
      if ((await run("echo", 1)) !== 1) throw new Error("bullmq: echo answered wrong");
    },
    async json() {
      const answer = await run("echo", batch);
      if (!Array.isArray(answer) || answer.length !== batch.length) throw new Error("bullmq: echo answered wrong");
    },
    async cancel() {
      const { id, ended } = await startPoll();
      const start = performance.now();
      if ((await cancels.publish("peer:cancel", id)) !== 1) throw new Error("bullmq: the worker does not listen for cancels");
      const { at, reason } = await ended;
      if (!reason.startsWith("cancelled")) throw new Error(`bullmq: a cancelled job failed with ${reason}`);
      return at - start;
    },
    async crash() {
      const { pid, ended } = await startPoll();
      const start = performance.now();
      process.kill(pid, "SIGKILL");
      const { at, reason } = await ended;
      if (!reason.startsWith("Unexpected exit code")) throw new Error(`bullmq: a killed child's job failed with ${reason}`);
      return at - start;
    },
    cpuRoots: { Redis: redis.child.pid!, worker: worker.child.pid! },
    parent: worker.child.pid!,
    async close() {
      await Promise.all([queue.close(), events.close(), cancels.quit()]);
      await stop(worker.child);
    },
  };
}

// ---- measuring ----

/** Jobs/s with `IN_FLIGHT` outstanding for `ms`, and the side's CPU (ms) per job meanwhile. */
async function load(side: Side, job: (lane: number) => Promise<void>, ms: number): Promise<{ rate: number; cpuMs: number; parts: string }> {
  let done = 0;
  const roots = Object.values(side.cpuRoots);
  const cpu = treeCpu(roots);
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async (_, lane) => {
      while (performance.now() < end) {
        await job(lane);
        done++;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const perJob = treeCpu(roots).map((after, i) => ((after - cpu[i]!) * 1000) / done);
  const names = [...Object.keys(side.cpuRoots), "children"];
  const parts = perJob.map((ms, i) => `${names[i]} ${ms.toFixed(2)}`).join(" + ");
  return { rate: done / seconds, cpuMs: perJob.reduce((a, b) => a + b, 0), parts };
}

/** The p50 of `n` measures made in turn. */
async function p50Of(n: number, measure: () => Promise<number>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) ms.push(await measure());
  return percentile(
    ms.sort((a, b) => a - b),
    50,
  );
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Figures {
  trivialRate: number[];
  trivialCpu: number[];
  jsonRate: number[];
  jsonCpu: number[];
  p50: number[];
  p95: number[];
  cancel: number[];
  crash: number[];
  rss: number[];
}

console.error(`measuring (${quick ? "quick" : "full"} run, ${ROUNDS} round${ROUNDS > 1 ? "s" : ""})…`);
const redis = await startRedis();
const sides: (Side & { close(): Promise<void> })[] = [];
try {
  sides.push(await plinthSide(), await bullmqSide(redis));
  const figures = new Map<Side, Figures>(
    sides.map((s) => [s, { trivialRate: [], trivialCpu: [], jsonRate: [], jsonCpu: [], p50: [], p95: [], cancel: [], crash: [], rss: [] }]),
  );
  // Warm: both children started and JIT-compiled, each job kind run.
  for (const side of sides) {
    await load(side, side.trivial, 1000);
    await load(side, side.json, 500);
    await side.cancel();
  }
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? sides : [...sides].reverse();
    /** Runs `measure` on each side in this round's order; logs what it gives. */
    const each = async (what: string, measure: (side: Side, f: Figures) => Promise<string>) => {
      for (const side of order) console.error(`  round ${round + 1}, ${side.name}, ${what}: ${await measure(side, figures.get(side)!)}`);
    };
    // Both children warm again after the last round's crashes.
    await each("warm", async (side) => `${(await load(side, side.trivial, 500)).rate.toFixed(0)} jobs/s`);
    await each("trivial jobs", async (side, f) => {
      const { rate, cpuMs, parts } = await load(side, side.trivial, LOAD_MS);
      f.trivialRate.push(rate);
      f.trivialCpu.push(cpuMs);
      f.rss.push(await childrenRss(side.parent));
      return `${rate.toFixed(0)} jobs/s, CPU per job ms: ${parts}; children ${f.rss.at(-1)!.toFixed(0)} MiB`;
    });
    await each("55 kB JSON jobs", async (side, f) => {
      const { rate, cpuMs, parts } = await load(side, side.json, LOAD_MS);
      f.jsonRate.push(rate);
      f.jsonCpu.push(cpuMs);
      return `${rate.toFixed(0)} jobs/s, CPU per job ms: ${parts}`;
    });
    await each("1 in flight", async (side, f) => {
      const { p50, p95 } = await latencies(LATENCY_CALLS, () => side.trivial(0));
      f.p50.push(p50);
      f.p95.push(p95);
      return `p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms`;
    });
    await each("cancel", async (side, f) => {
      f.cancel.push(await p50Of(CANCELS, () => side.cancel()));
      return `p50 ${f.cancel.at(-1)!.toFixed(1)} ms`;
    });
    await each("crash", async (side, f) => {
      f.crash.push(await p50Of(CANCELS, () => side.crash()));
      return `p50 ${f.crash.at(-1)!.toFixed(1)} ms`;
    });
  }
  const [plinth, bullmq] = sides.map((s) => figures.get(s)!) as [Figures, Figures];
  const rows: string[][] = [];
  const ratioRow = (what: string, key: keyof Figures, unit: string, digits: number, target?: { ratio: number; higher: boolean }) => {
    const p = median(plinth[key]);
    const b = median(bullmq[key]);
    const ratio = p / b;
    const met = target && (target.higher ? ratio >= target.ratio : ratio <= target.ratio);
    const goal = target ? `${target.higher ? "≥" : "≤"} ${target.ratio}× ${met ? "✓" : "✗"}` : "";
    rows.push([what, `${p.toFixed(digits)}${unit}`, `${b.toFixed(digits)}${unit}`, `${ratio.toFixed(2)}×`, goal]);
  };
  ratioRow(`trivial jobs, ${IN_FLIGHT} in flight, jobs/s`, "trivialRate", "", 0, { ratio: 1.5, higher: true });
  ratioRow("  server CPU per trivial job (Plinth + children; Redis + worker + children)", "trivialCpu", " ms", 2);
  ratioRow(`55 kB JSON jobs, ${IN_FLIGHT} in flight, jobs/s`, "jsonRate", "", 0, { ratio: 1.5, higher: true });
  ratioRow("  server CPU per 55 kB job", "jsonCpu", " ms", 2);
  ratioRow("trivial job, 1 in flight, p50", "p50", " ms", 2, { ratio: 1, higher: false });
  ratioRow("trivial job, 1 in flight, p95", "p95", " ms", 2, { ratio: 1, higher: false });
  ratioRow("cancel (signal looked at every 10 ms), seen ended, p50", "cancel", " ms", 1, { ratio: 1, higher: false });
  ratioRow("a child killed (SIGKILL), seen failed, p50", "crash", " ms", 1, { ratio: 1, higher: false });
  ratioRow("warm child RSS (mean of the two)", "rss", " MiB", 0);
  rows.at(-1)![4] = `Plinth ≤ 70 MiB ${median(plinth.rss) <= 70 ? "✓" : "✗"}`;
  const bullmqVersion = (JSON.parse(readFileSync(join(root, "node_modules/bullmq/package.json"), "utf8")) as { version: string }).version;
  const redisVersion = /v=(\S+)/.exec(execFileSync("redis-server", ["--version"], { encoding: "utf8" }))?.[1];
  printTable(["what", "Plinth", `BullMQ ${bullmqVersion} (Redis ${redisVersion})`, "ratio", "target"], rows);
} finally {
  for (const side of sides) await side.close();
  await stop(redis.child);
  rmSync(redis.dir, { recursive: true, force: true });
}
