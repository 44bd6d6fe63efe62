/**
 * `npm run bench:cluster`: several servers on one PostgreSQL database. A sleep-bound
 * plugin (each call sleeps 50 ms), max_children 2 per server, 1, 2 and 3 servers: every
 * call goes to the first server, 64 in flight (each on a model of its own), and the
 * others claim their share from the queue. Actions/s against one server's, and how the
 * calls spread over the servers.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { createDatabase, startPostgres } from "../test/helpers/postgres-server.ts";
import { bytes, createModel, type PlinthProcess, startPlinth, throughput, unary } from "./grpc-calls.ts";
import { printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const SECONDS = quick ? 4 : 10;
const IN_FLIGHT = 64;
const SLEEP_MS = 50;
const CHILDREN = 2;

const postgres = await startPostgres({ durable: true });
try {
  const results: { servers: number; rate: number; spread: string }[] = [];
  for (const count of [1, 2, 3]) {
    const url = await createDatabase(postgres.adminUrl);
    const engine = { max_children: CHILDREN, max_queue: 10000, min_idle_workers: CHILDREN };
    const servers: PlinthProcess[] = [];
    try {
      for (let i = 0; i < count; i++) servers.push(await startPlinth("bench/plugins/trivial.ts", { engine, backend: "postgres", url }));
      const first = servers[0]!;
      const models = await Promise.all(Array.from({ length: IN_FLIGHT }, () => createModel(first.client, "bench.Sleep")));
      const bodies = models.map((modelId) =>
        bytes(PredictRequestSchema, {
          modelId,
          kwargs: { ms: { kind: { case: "json", value: { kind: { case: "numberValue", value: SLEEP_MS } } } } },
          wait: true,
        }),
      );
      const ranOn = new Map<string, number>();
      const call = async (lane: number) => {
        const res = await unary(first.client, "/plinth.v1.EngineService/Predict", bodies[lane]!, (b) => fromBinary(PredictResponseSchema, b));
        if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
        ranOn.set(res.action.server, (ranOn.get(res.action.server) ?? 0) + 1);
      };
      await throughput(IN_FLIGHT, { ms: 2000 }, call); // warm: children started, plans cached
      ranOn.clear();
      const rate = await throughput(IN_FLIGHT, { ms: SECONDS * 1000 }, call);
      const total = [...ranOn.values()].reduce((a, b) => a + b, 0);
      const spread = [...ranOn.values()]
        .sort((a, b) => b - a)
        .map((n) => `${Math.round((n / total) * 100)} %`)
        .join(" / ");
      results.push({ servers: count, rate, spread });
      console.error(`${count} server(s): ${rate.toFixed(1)} actions/s`);
    } finally {
      for (const s of servers) await s.stop();
    }
  }
  const one = results[0]!.rate;
  const ideal = (n: number) => (n * CHILDREN * 1000) / SLEEP_MS;
  const target = (n: number) => (n === 2 ? 1.8 : n === 3 ? 2.5 : 1);
  printTable(
    ["servers", "actions/s", "× one server", "target", "of the children's ceiling", "calls run per server"],
    results.map((r) => [
      String(r.servers),
      r.rate.toFixed(1),
      `${(r.rate / one).toFixed(2)}×`,
      r.servers === 1 ? "" : `≥ ${target(r.servers)}× ${r.rate / one >= target(r.servers) ? "✓" : "✗"}`,
      `${Math.round((r.rate / ideal(r.servers)) * 100)} % of ${ideal(r.servers)}/s`,
      r.spread,
    ]),
  );
} finally {
  await postgres.remove();
}
