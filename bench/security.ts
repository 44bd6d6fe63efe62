/**
 * `npm run bench:security`: what TLS with bearer tokens, and mutual TLS, cost against
 * plaintext without authentication — warm predict p50 (one call at a time) and
 * actions/s (64 in flight), with a trivial argument and with a 55 kB JSON batch.
 *
 * The three servers run side by side as their own processes, with a bare grpc-js echo
 * of the same request bytes over plaintext and over TLS (what TLS costs grpc-js itself),
 * and are measured turn about in short slices (this machine's speed drifts over
 * minutes), each figure pooled over all its slices. The token server holds 10 tokens,
 * so that every call compares against all of them.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { TestCa } from "../test/helpers/certs.ts";
import { bytes, createModel, type PlinthProcess, startPlinth, stop, throughput, unary } from "./grpc-calls.ts";
import { batchText } from "./json-batch.ts";
import { percentile, printTable } from "./report.ts";
import { startProcess } from "./servers.ts";
import { tempDir } from "./temp.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 1 : 3;
const SECONDS = quick ? 1 : 3;
const IN_FLIGHT = 64;

const payloads = {
  trivial: { kind: { case: "json", value: { kind: { case: "numberValue", value: 1 } } } },
  "55 kB batch": { kind: { case: "jsonText", value: batchText } },
} as const;
type Payload = keyof typeof payloads;

const ca = new TestCa("Plinth bench CA", tempDir());
const server = ca.server();
const client = ca.client("bench");
const token = randomBytes(32).toString("hex");
const tokens = Array.from({ length: 10 }, (_, i) => (i === 9 ? token : randomBytes(32).toString("hex")));
const sha256 = (t: string) => createHash("sha256").update(t).digest("hex");
const caPem = readFileSync(ca.ca);

const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  callback(null, metadata);
});

const setups: Record<string, Parameters<typeof startPlinth>[1]> = {
  "plaintext, no auth": {},
  "TLS + bearer token": {
    server: [
      `tls: { cert: ${server.cert}, key: ${server.key} }`,
      "auth:",
      "  tokens:",
      ...tokens.map((t, i) => `    - { name: caller${i}, sha256: ${sha256(t)}, roles: [run] }`),
    ],
    credentials: grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(caPem), bearer),
  },
  "mutual TLS": {
    server: [
      `tls: { cert: ${server.cert}, key: ${server.key}, client_ca: ${ca.ca} }`,
      "auth:",
      "  certificates: [{ subject: CN=bench, roles: [run] }]",
    ],
    credentials: grpc.credentials.createSsl(caPem, readFileSync(client.key), readFileSync(client.cert)),
  },
};

async function predict(plinth: PlinthProcess, body: Uint8Array): Promise<void> {
  const res = await unary(plinth.client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
}

/** One server under test: how to call it with a request body, and the bodies (one per lane). */
interface Target {
  name: string;
  call: (body: Uint8Array) => Promise<unknown>;
  bodies: Record<Payload, Uint8Array[]>;
  stop: () => Promise<void>;
}

console.error(`measuring (${quick ? "quick" : "full"} run, ${ROUNDS} round(s))…`);
const plinths: Target[] = await Promise.all(
  Object.entries(setups).map(async ([name, options]) => {
    const plinth = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000 }, ...options });
    const models = await Promise.all(Array.from({ length: IN_FLIGHT }, () => createModel(plinth.client, "bench.Trivial")));
    const bodies = Object.fromEntries(
      Object.entries(payloads).map(([p, arg]) => [p, models.map((modelId) => bytes(PredictRequestSchema, { modelId, args: [arg], wait: true }))]),
    ) as Record<Payload, Uint8Array[]>;
    return { name, call: (body: Uint8Array) => predict(plinth, body), bodies, stop: () => plinth.stop() };
  }),
);
// The baseline for TLS itself: a bare grpc-js echo of the same request bytes, plaintext and over TLS.
const echoes: Target[] = await Promise.all(
  [
    { name: "echo, plaintext", args: [], credentials: grpc.credentials.createInsecure(), host: "127.0.0.1" },
    { name: "echo, TLS", args: ["--tls", server.cert, server.key], credentials: grpc.credentials.createSsl(caPem), host: "localhost" },
  ].map(async ({ name, args, credentials, host }) => {
    const echo = await startProcess(["bench/echo-server.ts", ...args], /^(\d+)\n/);
    const echoClient = new grpc.Client(`${host}:${echo.port}`, credentials, { "grpc.max_receive_message_length": -1 });
    const bodies = Object.fromEntries(
      Object.entries(payloads).map(([p, arg]) => [
        p,
        Array.from({ length: IN_FLIGHT }, () => bytes(PredictRequestSchema, { modelId: "m-echo", args: [arg], wait: true })),
      ]),
    ) as Record<Payload, Uint8Array[]>;
    const call = (body: Uint8Array) => unary(echoClient, "/bench.Echo/Echo", body, (b) => b);
    return {
      name,
      call,
      bodies,
      stop: () => {
        echoClient.close();
        return stop(echo.child);
      },
    };
  }),
);
const targets = [...plinths, ...echoes];
// Warm: connections, children, JIT.
for (const { call, bodies } of targets) {
  for (const p of Object.keys(payloads) as Payload[]) await throughput(IN_FLIGHT, { ms: 1000 }, (lane) => call(bodies[p][lane]!));
}

// Turn about in short slices, so that the machine's drift falls on every server alike:
// latency in blocks of sequential calls, then throughput in short windows. The order
// rotates every round, so that no server always follows another's load (and the
// collections and checkpoints that come after it).
const times = new Map<string, number[]>();
const counts = new Map<string, { calls: number; seconds: number }>();
for (let round = 0; round < ROUNDS * 10; round++) {
  const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
  for (const p of Object.keys(payloads) as Payload[]) {
    for (const { name, call, bodies } of order) {
      const block = times.get(`${name}|${p}`) ?? [];
      for (let i = 0; i < (p === "trivial" ? 50 : 20); i++) {
        const start = performance.now();
        await call(bodies[p][0]!);
        block.push(performance.now() - start);
      }
      times.set(`${name}|${p}`, block);
    }
    if (round % 2 === 1) continue;
    for (const { name, call, bodies } of order) {
      const rate = await throughput(IN_FLIGHT, { ms: (SECONDS * 1000) / 3 }, (lane) => call(bodies[p][lane]!));
      const c = counts.get(`${name}|${p}`) ?? { calls: 0, seconds: 0 };
      counts.set(`${name}|${p}`, { calls: c.calls + rate * (SECONDS / 3), seconds: c.seconds + SECONDS / 3 });
    }
  }
  console.error(`  round ${round + 1} of ${ROUNDS * 10}`);
}
for (const { stop } of targets) await stop();

const p50Of = (key: string) =>
  percentile(
    [...times.get(key)!].sort((a, b) => a - b),
    50,
  );
const rateOf = (key: string) => counts.get(key)!.calls / counts.get(key)!.seconds;
const rows: string[][] = [];
for (const p of Object.keys(payloads) as Payload[]) {
  for (const { name } of targets) {
    const baseName = name.startsWith("echo") ? "echo, plaintext" : "plaintext, no auth";
    const base = { p50: p50Of(`${baseName}|${p}`), rate: rateOf(`${baseName}|${p}`) };
    const p50 = p50Of(`${name}|${p}`);
    const rate = rateOf(`${name}|${p}`);
    // Slower latency and fewer calls/s both count as a cost (positive).
    const percent = (x: number) => (name === baseName ? "—" : `${(x * 100).toFixed(1)} %`);
    rows.push([p, name, `${p50.toFixed(2)} ms`, percent(p50 / base.p50 - 1), `${rate.toFixed(0)}/s`, percent(1 - rate / base.rate)]);
  }
}
printTable(["payload", "server", "warm p50", "p50 cost", "calls/s (64 in flight)", "rate cost"], rows);
