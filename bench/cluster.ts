/**
 * `npm run bench:cluster`: several servers on one PostgreSQL database. A sleep-bound
 * plugin (each call sleeps 50 ms), max_children 2 per server, 1, 2 and 3 servers: every
 * call goes to the first server, 64 in flight (each on a model of its own), and the
 * others claim their share from the queue. Actions/s against one server's, and how the
 * calls spread over the servers. Then one model whose predict is declared concurrent
 * (50 ms predicts, 16 in flight, all sent to the first server) on 1 and 2 servers, beside
 * its undeclared twin (one call at a time on the model, across the servers).
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

/** Predicts/s on one model, `inFlight` at once, sent to `to`; and the share each server ran. */
async function onOneModel(to: PlinthProcess, modelId: string, inFlight: number, ms: number): Promise<{ rate: number; ranOn: number[] }> {
  const body = bytes(PredictRequestSchema, {
    modelId,
    kwargs: { ms: { kind: { case: "json", value: { kind: { case: "numberValue", value: SLEEP_MS } } } } },
    wait: true,
  });
  const ranOn = new Map<string, number>();
  const call = async () => {
    const res = await unary(to.client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
    if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
    ranOn.set(res.action.server, (ranOn.get(res.action.server) ?? 0) + 1);
  };
  await throughput(inFlight, { ms: 2000 }, call);
  ranOn.clear();
  const rate = await throughput(inFlight, { ms }, call);
  return { rate, ranOn: [...ranOn.values()].sort((a, b) => b - a) };
}

const percents = (counts: number[]) => {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((n) => `${Math.round((n / total) * 100)} %`).join(" / ");
};

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
      const spread = percents([...ranOn.values()].sort((a, b) => b - a));
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

  // One concurrent model, on 1 and 2 servers.
  const IN_FLIGHT_ONE_MODEL = 16;
  const oneModel: { servers: number; shared: number; spread: string; single: number }[] = [];
  for (const count of [1, 2]) {
    const url = await createDatabase(postgres.adminUrl);
    const engine = { max_children: CHILDREN, max_queue: 10000, min_idle_workers: CHILDREN };
    const servers: PlinthProcess[] = [];
    try {
      for (let i = 0; i < count; i++) servers.push(await startPlinth("bench/plugins/weights.ts", { engine, backend: "postgres", url }));
      const first = servers[0]!;
      const shared = await onOneModel(first, await createModel(first.client, "weights.Shared"), IN_FLIGHT_ONE_MODEL, SECONDS * 1000);
      const single = await onOneModel(first, await createModel(first.client, "weights.Dense"), IN_FLIGHT_ONE_MODEL, (SECONDS * 1000) / 2);
      oneModel.push({ servers: count, shared: shared.rate, spread: percents(shared.ranOn), single: single.rate });
      console.error(`one concurrent model, ${count} server(s): ${shared.rate.toFixed(1)} predicts/s (undeclared: ${single.rate.toFixed(1)})`);
    } finally {
      for (const s of servers) await s.stop();
    }
  }
  const alone = oneModel[0]!.shared;
  printTable(
    [
      "servers",
      "one concurrent model: predicts/s",
      "× one server",
      "of the children's ceiling",
      "calls run per server",
      "undeclared twin: predicts/s",
    ],
    oneModel.map((r) => [
      String(r.servers),
      r.shared.toFixed(1),
      `${(r.shared / alone).toFixed(2)}×`,
      `${Math.round((r.shared / ideal(r.servers)) * 100)} % of ${ideal(r.servers)}/s`,
      r.spread,
      r.single.toFixed(1),
    ]),
  );
} finally {
  await postgres.remove();
}
