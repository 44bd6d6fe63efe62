/**
 * `npm run bench:hostile [-- --before REF] [-- --quick]`: how long grpc.health.v1 takes to
 * answer while one client attacks the server (issue 18: "health answers within 100 ms
 * whatever one client sends"), beside the same probe on an idle server in the same run.
 * With `--before REF` (a commit, e.g. the one before a change) that version's server is
 * measured too, turn about with this one, under the same attacks.
 *
 * The attacks, each for a few seconds, one client at a time:
 * - 8 MiB of JSON numbers in one `json` argument over Connect, without a token (tokens are configured);
 * - the same as 16.8 MB of binary gRPC, without a token;
 * - the 8 MiB JSON with a valid token;
 * - 200 Connect WatchState streams that never read, while four actions report every 5 ms
 *   (then also: actions ended per second, against the idle server's).
 */
import { fork } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { CreateInstanceRequestSchema, CreateInstanceResponseSchema, PredictRequestSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { checkout } from "./checkout.ts";
import { bytes, type PlinthProcess, root, startPlinth } from "./grpc-calls.ts";
import { percentile, printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const before = process.argv.includes("--before") ? process.argv[process.argv.indexOf("--before") + 1] : undefined;
const SECONDS = quick ? 2 : 5;
const ROUNDS = quick ? 1 : 2;

const token = randomBytes(32).toString("hex");
const sha256 = (t: string) => createHash("sha256").update(t).digest("hex");
const bearer = new grpc.Metadata();
bearer.set("authorization", `Bearer ${token}`);

interface Server {
  name: string;
  plinth: PlinthProcess;
  http: number;
  models: string[];
}

/** A server of `checkoutDir` (this one by default); with tokens, or without (every caller anonymous). */
async function start(name: string, checkoutDir: string | undefined, tokens: boolean): Promise<Server> {
  const plinth = await startPlinth("bench/plugins/trivial.ts", {
    ...(checkoutDir ? { root: checkoutDir } : {}),
    engine: { max_children: 4, progress_interval: 0.005, max_queue: 10000 },
    server: tokens ? ["auth:", "  tokens:", `    - { name: bench, sha256: ${sha256(token)}, roles: [admin] }`] : [],
    config: ["http:", "  address: 127.0.0.1:0"],
  });
  const http = Number(/"http":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(plinth.output())![1]);
  const models: string[] = [];
  for (let i = 0; i < 4; i++) models.push(await createModelWithToken(plinth));
  return { name, plinth, http, models };
}

async function createModelWithToken(plinth: PlinthProcess): Promise<string> {
  const request = bytes(CreateInstanceRequestSchema, { modelType: "bench.Reporter", wait: true });
  const answer = await new Promise<Buffer>((resolve, reject) =>
    plinth.client.makeUnaryRequest(
      "/plinth.v1.EngineService/CreateInstance",
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      request,
      bearer,
      (error, value) => (error ? reject(error) : resolve(value!)),
    ),
  );
  return fromBinary(CreateInstanceResponseSchema, answer).action!.modelId;
}

/** Health checks one after another for `ms`: each one's latency. */
async function probeHealth(port: number, ms: number): Promise<number[]> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const times: number[] = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const start = performance.now();
    await new Promise<void>((resolve) =>
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        { deadline: Date.now() + 60_000 },
        () => resolve(),
      ),
    );
    times.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 10));
  }
  client.close();
  return times;
}

/** Runs bench/attacker.ts with `attack` against `s` while `during` runs. */
async function attacked<T>(s: Server, attack: string, during: () => Promise<T>): Promise<T> {
  const child = fork(join(root, "bench/attacker.ts"), [attack, String(s.plinth.port), String(s.http), token], {
    execArgv: ["--import", "tsx"],
    cwd: root,
  });
  const [ready] = await Promise.race([once(child, "message"), once(child, "exit")]);
  if (ready !== "ready") throw new Error(`the attacker ${attack} exited before attacking`);
  try {
    return await during();
  } finally {
    child.send("stop");
    await once(child, "exit");
  }
}

/** Four actions reporting every 5 ms, one after another on each model, for `ms`: how many ended. */
async function reporters(s: Server, ms: number): Promise<number> {
  let ended = 0;
  const end = performance.now() + ms;
  await Promise.all(
    s.models.map(async (modelId) => {
      while (performance.now() < end) {
        const request = bytes(PredictRequestSchema, {
          modelId,
          kwargs: {
            seconds: { kind: { case: "json", value: { kind: { case: "numberValue", value: 0.2 } } } },
            every: { kind: { case: "json", value: { kind: { case: "numberValue", value: 5 } } } },
          },
          wait: true,
        });
        await new Promise<void>((resolve) =>
          s.plinth.client.makeUnaryRequest(
            "/plinth.v1.EngineService/Predict",
            (b: Uint8Array) => Buffer.from(b),
            (b: Buffer) => b,
            request,
            bearer,
            () => resolve(),
          ),
        );
        ended++;
      }
    }),
  );
  return ended / (ms / 1000);
}

const attacks: Record<string, string> = {
  "8 MiB JSON Value over Connect, no token": "connect-no-token",
  "16.8 MB binary Value over gRPC, no token": "grpc-no-token",
  "8 MiB JSON Value over Connect, with a token": "connect-token",
};
const WATCHED = "200 Connect watchers that never read, 4 reporting actions";

console.error(`measuring (${quick ? "quick" : "full"} run${before ? `, beside ${before}` : ""})…`);
const versions: [string, string | undefined][] = [["this checkout", undefined]];
if (before) versions.push([before, checkout(before)]);
let servers = await Promise.all(versions.map(([name, dir]) => start(name, dir, true)));
const health = new Map<string, number[]>();
const rates = new Map<string, number[]>();
const add = <T>(map: Map<string, T[]>, key: string, values: T[]) => map.set(key, [...(map.get(key) ?? []), ...values]);

for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [...servers].reverse() : servers;
  for (const s of order) add(health, `${s.name}|idle`, await probeHealth(s.plinth.port, SECONDS * 1000));
  for (const [name, attack] of Object.entries(attacks)) {
    for (const s of order) {
      add(health, `${s.name}|${name}`, await attacked(s, attack, () => probeHealth(s.plinth.port, SECONDS * 1000)));
      console.error(`  ${s.name}: ${name}`);
    }
  }
}
// The watchers are anonymous, as without auth every caller is: servers without tokens.
for (const s of servers) await s.plinth.stop();
servers = await Promise.all(versions.map(([name, dir]) => start(name, dir, false)));
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [...servers].reverse() : servers;
  for (const s of order) {
    add(rates, `${s.name}|idle`, [await reporters(s, SECONDS * 1000)]);
    const [times, busy] = await attacked(s, "stuck-watchers", () =>
      Promise.all([probeHealth(s.plinth.port, SECONDS * 1000), reporters(s, SECONDS * 1000)]),
    );
    add(health, `${s.name}|${WATCHED}`, times);
    add(rates, `${s.name}|watched`, [busy]);
    console.error(`  ${s.name}: ${WATCHED}`);
  }
}
for (const s of servers) await s.plinth.stop();

const rows: string[][] = [];
for (const name of ["idle", ...Object.keys(attacks), WATCHED]) {
  for (const s of servers) {
    const times = [...(health.get(`${s.name}|${name}`) ?? [])].sort((a, b) => a - b);
    const idle = [...(health.get(`${s.name}|idle`) ?? [])].sort((a, b) => a - b);
    const rate = (key: string) => {
      const r = rates.get(`${s.name}|${key}`) ?? [];
      return r.reduce((a, b) => a + b, 0) / r.length;
    };
    const actions = name === WATCHED ? `${rate("watched").toFixed(1)}/s (idle: ${rate("idle").toFixed(1)}/s)` : "";
    rows.push([
      name,
      s.name,
      `${percentile(times, 50).toFixed(1)} ms`,
      `${percentile(times, 99).toFixed(1)} ms`,
      `${(times.at(-1) ?? Number.NaN).toFixed(0)} ms`,
      name === "idle" ? "" : `${percentile(idle, 50).toFixed(1)} ms`,
      actions,
    ]);
  }
}
printTable(["while one client sends", "server", "health p50", "health p99", "health max", "idle p50 (same server)", "reporting actions ended"], rows);
