/**
 * `npm run bench:schemas`: what declared argument schemas add to a warm predict, with
 * the example plugin's schema (Iris: a tuple of a [n, 4] tensor or rows of four numbers)
 * and two flowers, as in the README.
 *
 * - the server's check alone (ajv, compiled once) and the child's (zod), in-process;
 * - end to end: the same predict on two model types of one server that differ only in
 *   the schema, interleaved call by call so that both see the same machine.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { jsonSchemaText } from "../sdk/schema.ts";
import { compileCall, problems } from "../server/engine/arg-schemas.ts";
import { createModel, startPlinth, unary } from "./grpc-calls.ts";
import { flowers } from "./plugins/schemas.ts";
import { percentile, printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const rows = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.0, 5.2, 2.3],
];
const text = JSON.stringify(rows);

/** p50 and p95 of `fn` in µs over `n` runs, after a warm-up. */
async function micro(n: number, fn: () => unknown): Promise<{ p50: number; p95: number }> {
  for (let i = 0; i < 2000; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await fn();
    times.push((performance.now() - start) * 1000);
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p95: percentile(times, 95) };
}

const check = compileCall({ call: "predict", args: JSON.parse(jsonSchemaText(flowers, "args")) }, "bench.Model");
const server = await micro(quick ? 5_000 : 50_000, () => {
  // As the server does it: the argument's JSON text parsed, then checked.
  if (problems(check, [JSON.parse(text)], {}).length) throw new Error("refused");
});
const child = await micro(quick ? 5_000 : 50_000, async () => {
  const result = await flowers["~standard"].validate([rows]);
  if (result.issues) throw new Error("refused");
});

const plinth = await startPlinth("bench/plugins/schemas.ts", { engine: { progress_interval: 0.05 } });
try {
  const models = { untyped: await createModel(plinth.client, "bench.Untyped"), typed: await createModel(plinth.client, "bench.Typed") };
  const request = (modelId: string) =>
    toBinary(
      PredictRequestSchema,
      create(PredictRequestSchema, { modelId, args: [create(ArgSchema, { kind: { case: "jsonText", value: text } })], wait: true }),
    );
  const requests = { untyped: request(models.untyped), typed: request(models.typed) };
  const times = { untyped: [] as number[], typed: [] as number[] };
  const rounds = quick ? 300 : 3000;
  for (let i = 0; i < rounds + 200; i++) {
    // Alternate which goes first, so neither always follows the other.
    for (const kind of i % 2 ? (["typed", "untyped"] as const) : (["untyped", "typed"] as const)) {
      const start = performance.now();
      const res = await unary(plinth.client, "/plinth.v1.EngineService/Predict", requests[kind], (b) => fromBinary(PredictResponseSchema, b));
      if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
      if (i >= 200) times[kind].push(performance.now() - start);
    }
  }
  for (const t of Object.values(times)) t.sort((a, b) => a - b);
  const ms = (t: number[], p: number) => percentile(t, p).toFixed(3);
  printTable(
    ["what", "p50", "p95"],
    [
      ["server check (ajv), µs", server.p50.toFixed(1), server.p95.toFixed(1)],
      ["child check (zod), µs", child.p50.toFixed(1), child.p95.toFixed(1)],
      ["warm predict without schema, ms", ms(times.untyped, 50), ms(times.untyped, 95)],
      ["warm predict with schema, ms", ms(times.typed, 50), ms(times.typed, 95)],
      [
        "added by the schema, ms",
        (percentile(times.typed, 50) - percentile(times.untyped, 50)).toFixed(3),
        (percentile(times.typed, 95) - percentile(times.untyped, 95)).toFixed(3),
      ],
    ],
  );
} finally {
  await plinth.stop();
}
