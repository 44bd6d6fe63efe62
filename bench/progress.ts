/**
 * `npm run bench:progress`: a plugin that reports every 10 ms (then every 1 ms) for 2 s,
 * followed by one WatchAction stream, as a client showing progress would: how many of its
 * reports reach the watcher, and how long after the plugin made them. With the default
 * engine.progress_interval (50 ms: the latest report wins), with 5 ms, and with 0 (every
 * report, in order). The configurations take turns, three rounds (one with --quick).
 */
import { fromBinary, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { WatchActionRequestSchema, WatchActionResponseSchema } from "../gen/plinth/v1/action_service_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { bytes, createModel, startPlinth, unary } from "./grpc-calls.ts";
import { percentile, printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const rounds = quick ? 1 : 3;
const SECONDS = 2;

/** One reporting predict, watched from its start: the reports seen and each one's delay. */
async function watchedRun(client: grpc.Client, modelId: string, everyMs: number): Promise<{ made: number; seen: number; delays: number[] }> {
  const request = bytes(PredictRequestSchema, {
    modelId,
    kwargs: {
      every: { kind: { case: "json", value: { kind: { case: "numberValue", value: everyMs } } } },
      seconds: { kind: { case: "json", value: { kind: { case: "numberValue", value: SECONDS } } } },
    },
  });
  const { action } = await unary(client, "/plinth.v1.EngineService/Predict", request, (b) => fromBinary(PredictResponseSchema, b));
  const seen = new Set<number>();
  const delays: number[] = [];
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  await new Promise<void>((resolve, reject) => {
    const stream = client.makeServerStreamRequest(
      "/plinth.v1.ActionService/WatchAction",
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(WatchActionResponseSchema, b),
      bytes(WatchActionRequestSchema, { actionId: action!.id }),
    );
    stream.on("data", (update: { action?: { state?: Parameters<typeof toJson<typeof ValueSchema>>[1]; result?: unknown } }) => {
      const now = performance.timeOrigin + performance.now();
      const state = update.action?.state ? (toJson(ValueSchema, update.action.state) as { i?: number; at?: number; done?: boolean }) : undefined;
      if (state?.i === undefined || state.done || seen.has(state.i)) return;
      seen.add(state.i);
      // Counted from the first the stream saw: reports made before it opened are not its to see.
      first = Math.min(first, state.i);
      last = Math.max(last, state.i);
      if (state.at !== undefined) delays.push(now - state.at);
    });
    stream.on("end", () => resolve());
    stream.on("error", reject);
  });
  return { made: last - first + 1, seen: seen.size, delays };
}

const configs: { name: string; interval?: number }[] = [
  { name: "progress_interval 0.05 (default)" },
  { name: "progress_interval 0.005", interval: 0.005 },
  { name: "progress_interval 0 (every report)", interval: 0 },
];
const results = new Map<string, { made: number; seen: number; delays: number[] }[]>();
console.error(`measuring: reports for ${SECONDS} s, ${rounds} round(s)…`);
for (let round = 0; round < rounds; round++) {
  for (const config of round % 2 === 0 ? configs : [...configs].reverse()) {
    const plinth = await startPlinth("bench/plugins/trivial.ts", {
      engine: { max_children: 2, ...(config.interval === undefined ? {} : { progress_interval: config.interval }) },
    });
    const modelId = await createModel(plinth.client, "bench.Reporter");
    for (const everyMs of [10, 1]) {
      const run = await watchedRun(plinth.client, modelId, everyMs);
      const key = `${config.name}, a report every ${everyMs} ms`;
      results.set(key, [...(results.get(key) ?? []), run]);
      console.error(`  ${key}, round ${round + 1}: ${run.seen} of ${run.made} reports seen`);
    }
    await plinth.stop();
  }
}

const rows = [...results.keys()].sort().map((name) => {
  const runs = results.get(name)!;
  const made = runs.reduce((n, r) => n + r.made, 0);
  const seen = runs.reduce((n, r) => n + r.seen, 0);
  const delays = runs.flatMap((r) => r.delays).sort((a, b) => a - b);
  return [
    name,
    `${((seen / made) * 100).toFixed(1)}% (${seen} of ${made})`,
    `${percentile(delays, 50).toFixed(2)} / ${percentile(delays, 95).toFixed(2)} ms`,
  ];
});
printTable(["engine", "reports seen by a WatchAction watcher", "delay from ctx.report, p50 / p95"], rows);
