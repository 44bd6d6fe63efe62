/**
 * One event-loop lag measurement in a fresh process, for bench/store.ts:
 * `lag-probe.ts '<backend json>' <writes per second> <seconds>`. Runs the server in
 * this process, the writer (bench/writer.ts) in another, and prints
 * { p99, max, achieved } as JSON: the lag of the server's own event loop.
 */
import { fork } from "node:child_process";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startServer } from "../server/app.ts";
import { parseConfig } from "../server/config/load.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const [backendJson, rate, seconds] = process.argv.slice(2);
const config = parseConfig(
  { server: { address: "127.0.0.1:0" }, backend: JSON.parse(backendJson!), plugins: [{ module: join(root, "bench/plugins/trivial.ts") }] },
  root,
);
const server = await startServer(config, pino({ level: "silent" }));
const histogram = monitorEventLoopDelay({ resolution: 1 });
const child = fork(join(root, "bench/writer.ts"), [String(server.port), "paced", rate!, seconds!], { execArgv: ["--import", "tsx"], cwd: root });
const result = await new Promise<{ done: number; seconds: number }>((resolve) =>
  child.on("message", (m) => {
    if (m === "ready") {
      histogram.enable();
      child.send("go");
    } else resolve(m as { done: number; seconds: number });
  }),
);
histogram.disable();
await server.close();
console.log(JSON.stringify({ p99: histogram.percentile(99) / 1e6, max: histogram.max / 1e6, achieved: result.done / result.seconds }));
