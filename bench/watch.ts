/**
 * `npm run bench:watch`: 100 WatchState streams open while plugins report about 1,000
 * updates a second (8 actions reporting every 5 ms, engine.progress_interval 5 ms):
 * half over gRPC, half over Connect on the HTTP listener (as the dashboard watches), each
 * half in a client process of its own. Prints the updates the watchers got per second,
 * the delay from the server's change (Action.update_time) to a watcher for each
 * protocol, the server's RSS, and whether every watcher converged to the final state.
 */
import { fork } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createChannel, createClient } from "nice-grpc";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { procStat } from "../server/process/proc.ts";
import { niceDefinition } from "../server/rpc/service-definition.ts";
import { percentile, printTable, rssMiB } from "./report.ts";
import { startProcess } from "./servers.ts";
import { tempDir } from "./temp.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const quick = process.argv.includes("--quick");
const WATCHERS = Number(process.env.WATCHERS ?? 100);
/** Each reporting action yields up to 200 revisions/s (progress_interval 5 ms); 8 make about 1,000/s here. */
const REPORTERS = Number(process.env.REPORTERS ?? 8);
const INTERVAL_MS = 5;
const SECONDS = quick ? 3 : 8;

const num = (value: number) => ({ kind: { case: "json" as const, value: { kind: { case: "numberValue" as const, value } } } });

const dir = tempDir("plinth-bench-watch-");
const config = join(dir, "plinth.yaml");
writeFileSync(
  config,
  [
    "backend:",
    `  path: ${join(dir, "plinth.db")}`,
    // 100 anonymous watchers from one address: more than the default allows one caller.
    "server:",
    "  limits:",
    `    streams_per_caller: ${2 * WATCHERS}`,
    "engine:",
    `  max_children: ${REPORTERS}`,
    `  progress_interval: ${INTERVAL_MS / 1000}`,
    "plugins:",
    `  - module: ${join(root, "bench/plugins/trivial.ts")}`,
    "    runtime: deno",
  ].join("\n"),
);
console.error(`measuring (${quick ? "quick" : "full"} run)…`);
const server = await startProcess(
  ["server/main.ts", "--config", config, "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
  /"address":"127\.0\.0\.1:(\d+)","msg":"serving"/,
);
const httpPort = Number(/"http":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(server.output())![1]);
const channel = createChannel(`127.0.0.1:${server.port}`);
const engine = createClient(niceDefinition(EngineService), channel);
const actions = createClient(niceDefinition(ActionService), channel);
const state = createClient(niceDefinition(StateService), channel);
const idleRss = rssMiB(server.child.pid!);

const models: string[] = [];
for (let i = 0; i < REPORTERS; i++) models.push((await engine.createInstance({ modelType: "bench.Reporter", wait: true })).action!.modelId);
// Start the reporters' children first, so that the measurement is of watching.
await Promise.all(models.map((modelId) => engine.predict({ modelId, kwargs: { seconds: num(0.01) }, wait: true })));

// The watchers: half over gRPC, half over Connect, each half in a process of its own.
type Report = {
  delivered: number;
  latencies: number[];
  views: Record<string, [number, number]>[];
  /** The watchers' process: its CPU time over the measurement's (1 = one core), and its event loop's delay p50/p95/max in ms. */
  cpuShare: number;
  loopDelay: number[];
};
const PROTOCOLS = [
  ["grpc", server.port],
  ["connect", httpPort],
] as const;
const clients = PROTOCOLS.map(([protocol, port]) =>
  fork(join(root, "bench/watchers.ts"), [String(port), String(WATCHERS / 2), protocol], { execArgv: ["--import", "tsx"], cwd: root }),
);
await Promise.all(clients.map((c) => once(c, "message")));
const ask = (message: string) =>
  Promise.all(
    clients.map(
      (c) =>
        new Promise<Report>((resolve) => {
          c.once("message", (m) => resolve(m as Report));
          c.send(message);
        }),
    ),
  );

const revisionBefore = (await state.getState({})).state!.revision;
const serverCpu = () => procStat(server.child.pid!)?.cpuTicks ?? 0; // clock ticks, 100 a second here
const started = performance.now();
const cpuBefore = serverCpu();
for (const c of clients) c.send("start");
let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(server.child.pid!))), 200);
const runs = await Promise.all(models.map((modelId) => engine.predict({ modelId, kwargs: { seconds: num(SECONDS), every: num(INTERVAL_MS) } })));
const ids = runs.map((r) => r.action!.id);
const finals = await Promise.all(ids.map((actionId) => actions.waitAction({ actionId })));
for (const c of clients) c.send("stop");
const produced = Number((await state.getState({})).state!.revision - revisionBefore);
const failed = finals.find((f) => f.action!.status !== ActionStatus.SUCCEEDED);
if (failed) throw new Error(`a reporter did not succeed: ${failed.action!.error?.message}`);
const elapsed = (performance.now() - started) / 1000;
const serverShare = (serverCpu() - cpuBefore) / 100 / elapsed;
clearInterval(sampler);

// Every watcher converges to the final state of every action.
const final = new Map(
  finals.map((f) => {
    const i = f.action!.state?.kind.case === "structValue" ? f.action!.state.kind.value.fields.i : undefined;
    return [f.action!.id, i?.kind.case === "numberValue" ? i.kind.value : -1];
  }),
);
let reports: Report[] = [];
let allConverged = false;
for (let tries = 0; tries < 200 && !allConverged; tries++) {
  reports = await ask("report");
  allConverged = reports.every((r) =>
    r.views.every((view) => ids.every((id) => view[id]?.[0] === ActionStatus.SUCCEEDED && view[id]?.[1] === final.get(id))),
  );
  if (!allConverged) await new Promise((r) => setTimeout(r, 50));
}
await Promise.all(
  clients.map((c) => {
    c.send("close");
    return once(c, "exit");
  }),
);
channel.close();
server.child.kill("SIGTERM");
const delivered = reports.reduce((n, r) => n + r.delivered, 0);
const delays = (r: Report) => {
  const sorted = [...r.latencies].sort((a, b) => a - b);
  return `${percentile(sorted, 50).toFixed(0)} ms / ${percentile(sorted, 95).toFixed(0)} ms / ${sorted.at(-1)!.toFixed(0)} ms`;
};
const rows = [
  ["watchers", String(WATCHERS), ""],
  ["state changes produced per second", (produced / elapsed).toFixed(0), `${REPORTERS} actions reporting every ${INTERVAL_MS} ms`],
  ["updates delivered to watchers, per second", (delivered / elapsed).toFixed(0), `${(delivered / elapsed / WATCHERS).toFixed(0)} per watcher`],
  ...reports.map((r, i) => [`  of which to the ${PROTOCOLS[i]![0]} watchers`, (r.delivered / elapsed).toFixed(0), ""]),
  ["delivery delay p50 / p95 / max, gRPC watchers", delays(reports[0]!), "p95 < 50 ms"],
  ["delivery delay p50 / p95 / max, Connect watchers (HTTP/1.1)", delays(reports[1]!), "beside gRPC's, same run"],
  ...reports.map((r, i) => [
    `${PROTOCOLS[i]![0]} watchers' process: CPU, event loop delay p50 / p95 / max`,
    `${(r.cpuShare * 100).toFixed(0)} % of a core, ${r.loopDelay.map((d) => d.toFixed(0)).join(" / ")} ms`,
    "",
  ]),
  ["server process: CPU", `${(serverShare * 100).toFixed(0)} % of a core`, "the plugins' children apart"],
  ["every watcher converged to the final state", allConverged ? "yes" : "NO", "yes"],
  ["server RSS idle / peak while watched", `${idleRss.toFixed(0)} MiB / ${peakRss.toFixed(0)} MiB`, ""],
];
printTable(["what", "measured", "target / note"], rows);
