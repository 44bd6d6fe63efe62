/**
 * `npm run bench`: the process manager's figures, each beside its baseline measured
 * in the same run on the same machine — a bare @grpc/grpc-js unary echo on loopback,
 * and a raw spawn of the same runtime.
 *
 * Servers run as separate processes (as in production); this process is the client.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { WaitActionRequestSchema, WaitActionResponseSchema } from "../gen/plinth/v1/action_service_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { FrameDecoder } from "../sdk/worker/frames.ts";
import { BundleFolder } from "../server/process/bundle-folder.ts";
import { buildNodeEntry } from "../server/process/node-entry.ts";
import { bundlePlugin } from "../server/process/plugin-bundle.ts";
import { bytes, cancelMs, createModel, latencies, root, startPlinth, startReporting, stop, throughput, unary } from "./grpc-calls.ts";
import { percentile, printTable, rssMiB } from "./report.ts";
import { startProcess as startServer } from "./servers.ts";

const quick = process.argv.includes("--quick");
const seconds = quick ? 1 : 3;

function predictRequest(modelId: string): Uint8Array {
  return bytes(PredictRequestSchema, { modelId, args: [{ kind: { case: "json", value: { kind: { case: "numberValue", value: 1 } } } }], wait: true });
}

async function predict(client: grpc.Client, request: Uint8Array): Promise<void> {
  const res = await unary(client, "/plinth.v1.EngineService/Predict", request, (b) => fromBinary(PredictResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
}

/** Starts a predict that runs until cancelled; resolves with its id once it executes. */
async function startLong(client: grpc.Client, modelId: string): Promise<string> {
  return (await startReporting(client, modelId)).actionId;
}

/** A child killed from outside (SIGKILL to its pid) while it runs a call: until WaitAction answers that the action failed. */
async function crashMs(client: grpc.Client, modelId: string): Promise<number> {
  const { actionId, state } = await startReporting(client, modelId);
  const start = performance.now();
  process.kill((state as { pid: number }).pid, "SIGKILL");
  const res = await unary(client, "/plinth.v1.ActionService/WaitAction", bytes(WaitActionRequestSchema, { actionId }), (b) =>
    fromBinary(WaitActionResponseSchema, b),
  );
  if (res.action?.error?.code !== "plugin_exited") throw new Error(`a killed child: ${res.action?.error?.code} ${res.action?.error?.message}`);
  return performance.now() - start;
}

/** The Node child and the trivial plugin as the server builds them (server/process/node-entry.ts, plugin-bundle.ts), or both through tsx. */
const childBuild = await buildNodeEntry(pino({ level: "silent" }));
const trivialPlugin = join(root, "bench/plugins/trivial.ts");
const bundles = new BundleFolder();
const trivialBundle = childBuild && (await bundlePlugin(trivialPlugin, childBuild, bundles.path));
const entryArgs =
  childBuild && typeof trivialBundle === "string"
    ? [childBuild.entry, trivialBundle]
    : ["--import", "tsx", join(root, "sdk/adapters/node.ts"), trivialPlugin];

/** Spawns the worker for the trivial plugin, as the server does, and waits for its hello frame. */
function rawWorkerSpawn(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, entryArgs, {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const decoder = new FrameDecoder(1 << 20);
    child.stdout!.on("data", (chunk: Buffer) => {
      if (decoder.push(chunk).length > 0) child.stdin!.end();
    });
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`worker exited with ${code}`))));
  });
}

function rawSpawn(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "ignore" });
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`exited with ${code}`))));
  });
}

// ---- the run ----

const rows: [string, string, string, string][] = [];
const row = (what: string, value: string, baseline: string, target: string) => {
  rows.push([what, value, baseline, target]);
  console.error(`  ${what}: ${value}`);
};
const ms = (x: number) => `${x.toFixed(2)} ms`;

console.error(`measuring (${quick ? "quick" : "full"} run)…`);

// Baselines.
const echo = await startServer(["bench/echo-server.ts"], /^(\d+)\n/);
const echoClient = new grpc.Client(`127.0.0.1:${echo.port}`, grpc.credentials.createInsecure());
const echoRequest = new Uint8Array(32).fill(7);
const echoCall = () => unary(echoClient, "/bench.Echo/Echo", echoRequest, (b) => b);
await latencies(300, echoCall);
const echoLatency = await latencies(quick ? 500 : 2000, echoCall);
const echoRate = await throughput(64, { ms: seconds * 1000 }, echoCall);
echoClient.close();
await stop(echo.child);

const nodeSpawn = await latencies(quick ? 5 : 10, () => rawSpawn(process.execPath, ["-e", "0"]));
const workerSpawn = await latencies(quick ? 3 : 6, rawWorkerSpawn);
// The runtime alone importing the plugin: built (the plugin and the SDK as the server builds
// them), and the TypeScript through tsx's loader.
const importing = (args: string[], module: string) =>
  rawSpawn(process.execPath, [...args, "--input-type=module", "-e", `await import(${JSON.stringify(pathToFileURL(module).href)})`]);
const builtImport = typeof trivialBundle === "string" ? await latencies(quick ? 5 : 10, () => importing([], trivialBundle)) : undefined;
const tsxImport = await latencies(quick ? 5 : 10, () => importing(["--import", "tsx"], trivialPlugin));
bundles.remove();

// Warm: reused workers, max_children 2.
const warm = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000, sigterm_timeout: 1 } });
const idleRss = rssMiB(warm.child.pid!);
const models = await Promise.all(Array.from({ length: 64 }, () => createModel(warm.client, "bench.Trivial")));
const requests = models.map(predictRequest);
await latencies(300, () => predict(warm.client, requests[0]!));
const warmLatency = await latencies(quick ? 500 : 2000, () => predict(warm.client, requests[0]!));
let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(warm.child.pid!))), 100);
const actionRate = await throughput(64, { ms: seconds * 1000 }, (lane) => predict(warm.client, requests[lane]!));
clearInterval(sampler);

// The same load on the memory backend: what the SQLite writes (3 per action) cost.
const memory = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000 }, backend: "memory" });
const memoryRequests = (await Promise.all(Array.from({ length: 64 }, () => createModel(memory.client, "bench.Trivial")))).map(predictRequest);
await throughput(64, { ms: 1000 }, (lane) => predict(memory.client, memoryRequests[lane]!));
const memoryRate = await throughput(64, { ms: seconds * 1000 }, (lane) => predict(memory.client, memoryRequests[lane]!));
await memory.stop();

// Cancel: a cooperative plugin, and one that ignores SIGTERM (sigterm_timeout 1 s).
const sleeper = await createModel(warm.client, "bench.Sleeper");
const cooperative: number[] = [];
for (let i = 0; i < (quick ? 5 : 15); i++) cooperative.push(await cancelMs(warm.client, await startLong(warm.client, sleeper)));
cooperative.sort((a, b) => a - b);
const spinner = await createModel(warm.client, "bench.Spinner");
const spinning: number[] = [];
for (let i = 0; i < (quick ? 5 : 15); i++) spinning.push(await cancelMs(warm.client, await startLong(warm.client, spinner)));
spinning.sort((a, b) => a - b);
// A child killed from outside while it runs a call (SIGKILL to its pid), seen failed by the client.
const crashes: number[] = [];
for (let i = 0; i < (quick ? 5 : 15); i++) crashes.push(await crashMs(warm.client, sleeper));
crashes.sort((a, b) => a - b);
const stubborn = await createModel(warm.client, "bench.Stubborn");
const forced: number[] = [];
for (let i = 0; i < (quick ? 2 : 4); i++) forced.push(await cancelMs(warm.client, await startLong(warm.client, stubborn), false));
forced.sort((a, b) => a - b);
// Stopping the server (SIGTERM) while a plugin that ignores SIGTERM runs: the README's
// "within sigterm_timeout + 2 s" (test/stopping.test.ts checks the stop, not its time).
await startLong(warm.client, stubborn);
const stopping = performance.now();
await warm.stop();
const stopped = performance.now() - stopping;

// Cold: one process per call.
const cold = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, reuse_workers: false } });
const coldModel = await createModel(cold.client, "bench.Trivial");
const coldRequest = predictRequest(coldModel);
const coldLatency = await latencies(quick ? 4 : 10, () => predict(cold.client, coldRequest));
await cold.stop();
// The same, the plugin loading through tsx (a plugin the server cannot build).
const coldTsx = await startPlinth("bench/plugins/trivial-tsx.ts", { engine: { max_children: 2, reuse_workers: false } });
const coldTsxRequest = predictRequest(await createModel(coldTsx.client, "bench.Trivial"));
const coldTsxLatency = await latencies(quick ? 4 : 10, () => predict(coldTsx.client, coldTsxRequest));
await coldTsx.stop();

// The same on Deno children: a smaller runtime to start and to tear down.
const deno = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, sigterm_timeout: 1 }, runtime: "deno" });
const denoModel = predictRequest(await createModel(deno.client, "bench.Trivial"));
await latencies(300, () => predict(deno.client, denoModel));
const denoLatency = await latencies(quick ? 500 : 2000, () => predict(deno.client, denoModel));
const denoSleeper = await createModel(deno.client, "bench.Sleeper");
const denoCancel: number[] = [];
for (let i = 0; i < (quick ? 5 : 15); i++) denoCancel.push(await cancelMs(deno.client, await startLong(deno.client, denoSleeper)));
denoCancel.sort((a, b) => a - b);
const denoSpinner = await createModel(deno.client, "bench.Spinner");
const denoSpinning: number[] = [];
for (let i = 0; i < (quick ? 5 : 15); i++) denoSpinning.push(await cancelMs(deno.client, await startLong(deno.client, denoSpinner)));
denoSpinning.sort((a, b) => a - b);
await deno.stop();

// Start to "serving" with the embedded default (the example plugins), the package's build
// (what an installed Plinth runs: npm run build) against the sources through tsx (a
// clone's npm start), turn about, each in a folder of its own (its data/).
execFileSync(process.execPath, [join(root, "scripts/build.mjs")], { cwd: root, stdio: "ignore" });
const startToServing = (args: string[]) =>
  new Promise<number>((resolve, reject) => {
    const cwd = mkdtempSync(join(tmpdir(), "plinth-bench-start-"));
    const started = performance.now();
    const server = spawn(process.execPath, [...args, "--address", "127.0.0.1:0", "--http-address", "off"], {
      cwd,
      stdio: ["ignore", "pipe", "inherit"],
    });
    server.once("exit", () => rmSync(cwd, { recursive: true, force: true }));
    let out = "";
    server.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (!out.includes('"msg":"serving"')) return;
      const took = performance.now() - started;
      server.once("exit", () => resolve(took));
      server.kill("SIGTERM");
      server.stdout!.resume();
    });
    server.once("exit", (code) => {
      if (!out.includes('"msg":"serving"')) reject(new Error(`the server exited with ${code}: ${out}`));
    });
  });
const builtStarts: number[] = [];
const tsxStarts: number[] = [];
for (let i = 0; i < (quick ? 2 : 5); i++) {
  builtStarts.push(await startToServing([join(root, "dist/server/main.mjs")]));
  tsxStarts.push(
    await startToServing(["--import", pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href, join(root, "server/main.ts")]),
  );
}
builtStarts.sort((a, b) => a - b);
tsxStarts.sort((a, b) => a - b);

row("predict (wait) warm, p50", ms(warmLatency.p50), `echo p50 ${ms(echoLatency.p50)}`, `≤ echo p50 + 1 ms (${ms(echoLatency.p50 + 1)})`);
row("predict (wait) warm, p95", ms(warmLatency.p95), `echo p95 ${ms(echoLatency.p95)}`, "");
const twice = (x: number | undefined) => (x === undefined ? "" : `≤ 2× (${ms(2 * x)})`);
row(
  "predict (wait) cold, p50: the plugin built",
  ms(coldLatency.p50),
  `node importing the built plugin p50 ${builtImport ? ms(builtImport.p50) : "(not built)"}; the child's spawn to hello p50 ${ms(workerSpawn.p50)}`,
  twice(builtImport?.p50),
);
row(
  "predict (wait) cold, p95: the plugin built",
  ms(coldLatency.p95),
  `the child's spawn to hello p95 ${ms(workerSpawn.p95)}; node -e 0 p50 ${ms(nodeSpawn.p50)}`,
  "",
);
row(
  "predict (wait) cold, p50: the plugin through tsx",
  ms(coldTsxLatency.p50),
  `node --import tsx importing the plugin p50 ${ms(tsxImport.p50)}`,
  twice(tsxImport.p50),
);
row(
  "trivial predicts/s, max_children 2, 64 in flight",
  actionRate.toFixed(0),
  `echo calls/s, 64 in flight: ${echoRate.toFixed(0)}`,
  `≥ 40% of echo (${(echoRate * 0.4).toFixed(0)}): ${((actionRate / echoRate) * 100).toFixed(0)}%`,
);
row(
  "same, memory backend",
  memoryRate.toFixed(0),
  `echo calls/s, 64 in flight: ${echoRate.toFixed(0)}`,
  `${((memoryRate / echoRate) * 100).toFixed(0)}% of echo`,
);
row("cancel, cooperative plugin, p50 / max", `${ms(percentile(cooperative, 50))} / ${ms(cooperative.at(-1)!)}`, "", "< 50 ms");
row(
  "cancel, CPU-bound plugin (synchronous loop), p50 / max",
  `${ms(percentile(spinning, 50))} / ${ms(spinning.at(-1)!)}`,
  "",
  "cooperative, < 100 ms",
);
row("a child killed from outside, seen failed, p50 / max", `${ms(percentile(crashes, 50))} / ${ms(crashes.at(-1)!)}`, "", "p50 ≤ 15 ms");
row("cancel, plugin ignoring its signal and SIGTERM, max", ms(forced.at(-1)!), "cancel_grace_seconds 1000 ms + sigterm_timeout 1000 ms", "≤ 2100 ms");
row("server stop (SIGTERM), plugin ignoring SIGTERM running", ms(stopped), "sigterm_timeout 1000 ms", "≤ sigterm_timeout + 2 s (3000 ms)");
row("deno plugin: predict (wait) warm, p50 / p95", `${ms(denoLatency.p50)} / ${ms(denoLatency.p95)}`, `echo p50 ${ms(echoLatency.p50)}`, "");
row("deno plugin: cancel, cooperative, p50 / max", `${ms(percentile(denoCancel, 50))} / ${ms(denoCancel.at(-1)!)}`, "", "< 50 ms");
row("deno plugin: cancel, CPU-bound, p50 / max", `${ms(percentile(denoSpinning, 50))} / ${ms(denoSpinning.at(-1)!)}`, "", "cooperative, < 100 ms");
row(
  "start to serving, the example plugins, p50 / max: the package's build",
  `${ms(percentile(builtStarts, 50))} / ${ms(builtStarts.at(-1)!)}`,
  `the sources through tsx: ${ms(percentile(tsxStarts, 50))} / ${ms(tsxStarts.at(-1)!)}`,
  "",
);
row("server RSS idle / under load (peak)", `${idleRss.toFixed(0)} MiB / ${peakRss.toFixed(0)} MiB`, "", "");

printTable(["what", "plinth", "baseline (same run)", "target"], rows);
