/**
 * `npm run bench:failover`: two servers on one PostgreSQL database; the one running an
 * action (with another queued behind it on the same model) (a) is killed (SIGKILL, same
 * host: its process is seen gone), (b) stalls (SIGSTOP: alive, renewing nothing — as a
 * power loss or a network cut on another host looks from the database), (c) stops
 * cleanly (SIGTERM). Timed from the signal to the other server showing the running
 * action ended (interrupted; cancelled by a clean stop) and the queued one running
 * there; lease_seconds 2 and 5.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { GetActionRequestSchema, GetActionResponseSchema } from "../gen/plinth/v1/action_service_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { createDatabase, startPostgres } from "../test/helpers/postgres-server.ts";
import { bytes, createModel, root, unary } from "./grpc-calls.ts";
import { printTable } from "./report.ts";
import { tempDir } from "./temp.ts";

const quick = process.argv.includes("--quick");
const REPEAT = quick ? 1 : 3;

interface Server {
  child: ChildProcess;
  /** Resolves with the time (performance.now()) its output first matched, and the match. */
  when(pattern: RegExp): Promise<{ at: number; match: RegExpExecArray }>;
}

function server(url: string, leaseSeconds: number): Server {
  const dir = tempDir();
  const config = join(dir, "plinth.yaml");
  writeFileSync(
    config,
    [
      "server:",
      "  address: 127.0.0.1:0",
      "backend:",
      "  kind: postgres",
      `  url: ${url}`,
      `  lease_seconds: ${leaseSeconds}`,
      "engine:",
      "  sigterm_timeout: 1",
      "plugins:",
      `  - module: ${join(root, "bench/plugins/trivial.ts")}`,
    ].join("\n"),
  );
  const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts", "--config", config], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const waiting: { pattern: RegExp; resolve: (t: { at: number; match: RegExpExecArray }) => void }[] = [];
  child.stdout!.on("data", (chunk: Buffer) => {
    const now = performance.now();
    out += chunk.toString();
    for (const w of [...waiting]) {
      const match = w.pattern.exec(out);
      if (match) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve({ at: now, match });
      }
    }
  });
  return {
    child,
    when: (pattern) =>
      new Promise((resolve, reject) => {
        const match = pattern.exec(out);
        if (match) resolve({ at: performance.now(), match });
        else waiting.push({ pattern, resolve });
        child.once("exit", (code) => reject(new Error(`server exited with ${code} before printing ${pattern}:\n${out}`)));
      }),
  };
}

const SERVING = /"address":"127\.0\.0\.1:(\d+)","msg":"serving"/;

/** How its action stands, as the other server tells it. */
async function actionOn(port: number, actionId: string): Promise<string> {
  // QUEUED, EXECUTING, FAILED interrupted, …
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const res = await unary(client, "/plinth.v1.ActionService/GetAction", bytes(GetActionRequestSchema, { actionId }), (b) =>
      fromBinary(GetActionResponseSchema, b),
    );
    return `${ActionStatus[res.action!.status]} ${res.action!.error?.code ?? ""}`;
  } finally {
    client.close();
  }
}

/** Polls until the action leaves the queue on the server at `port`; resolves with when, and its status. */
async function leftQueue(port: number, actionId: string): Promise<{ at: number; status: string }> {
  for (;;) {
    const status = await actionOn(port, actionId);
    if (!status.startsWith("QUEUED")) return { at: performance.now(), status };
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Polls until the action has ended on the server at `port`; resolves with when, and how. */
async function ended(port: number, actionId: string): Promise<{ at: number; status: string }> {
  for (;;) {
    const status = await actionOn(port, actionId);
    if (/^(FAILED|CANCELLED|SUCCEEDED)/.test(status)) return { at: performance.now(), status };
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function measure(
  url: string,
  leaseSeconds: number,
  how: "SIGSTOP" | "SIGKILL" | "SIGTERM",
): Promise<{ ms: number; ended: string; queuedMs: number; queued: string }> {
  const first = server(url, leaseSeconds);
  const client = new grpc.Client(`127.0.0.1:${(await first.when(SERVING)).match[1]}`, grpc.credentials.createInsecure());
  // A call that runs until it is stopped: the first server takes it (it has a child to spare).
  const modelId = await createModel(client, "bench.Sleeper");
  const predict = () =>
    unary(client, "/plinth.v1.EngineService/Predict", bytes(PredictRequestSchema, { modelId }), (b) => fromBinary(PredictResponseSchema, b));
  const started = await predict();
  // Queued behind it on the same model: it has not started when the server goes.
  const queued = await predict();
  client.close();
  const other = server(url, leaseSeconds);
  const port = Number((await other.when(SERVING)).match[1]);
  // Both serving, and the first one running its action, before the signal.
  while (!(await actionOn(port, started.action!.id)).startsWith("EXECUTING")) await new Promise((resolve) => setTimeout(resolve, 10));
  const signalledAt = performance.now();
  first.child.kill(how);
  const end = await ended(port, started.action!.id);
  const next = await leftQueue(port, queued.action!.id);
  first.child.kill("SIGCONT");
  first.child.kill("SIGKILL");
  if (first.child.exitCode === null && first.child.signalCode === null) await once(first.child, "exit");
  other.child.kill("SIGTERM");
  await once(other.child, "exit");
  return { ms: end.at - signalledAt, ended: end.status, queuedMs: next.at - signalledAt, queued: next.status };
}

const postgres = await startPostgres();
try {
  const rows: string[][] = [];
  for (const lease of [2, 5]) {
    for (const how of ["SIGKILL", "SIGSTOP", "SIGTERM"] as const) {
      const runs: { ms: number; ended: string; queuedMs: number; queued: string }[] = [];
      for (let i = 0; i < REPEAT; i++) runs.push(await measure(await createDatabase(postgres.adminUrl), lease, how));
      const times = runs.map((r) => r.ms);
      const worst = Math.max(...times, ...runs.map((r) => r.queuedMs));
      const target = how === "SIGTERM" ? "" : `≤ lease + 1 s = ${lease + 1} s ${worst <= (lease + 1) * 1000 ? "✓" : "✗"}`;
      const endings = [...new Set(runs.map((r) => r.ended))].join(" / ");
      const queued = [...new Set(runs.map((r) => r.queued))].join(" / ");
      const queuedTimes = runs.map((r) => `${(r.queuedMs / 1000).toFixed(2)} s`).join(", ");
      rows.push([`${lease} s`, how, times.map((t) => `${(t / 1000).toFixed(2)} s`).join(", "), endings, `${queued} after ${queuedTimes}`, target]);
    }
  }
  printTable(["lease", "the server running the action got", "its action ended after", "how, seen on the other", "its queued action", "target"], rows);
} finally {
  await postgres.remove();
}
