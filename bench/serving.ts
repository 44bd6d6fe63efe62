/**
 * `npm run bench:serving [-- --before REF] [-- --quick]`: serving a model whose instance
 * is large (bench/plugins/weights.ts: `mb` megabytes of float32 weights, deserialized by
 * copying them, as a library rebuilds its tensors), each figure beside its baseline in
 * the same run:
 * - warm predict p50 at 1 in flight, a 50 MB model against a 1 kB model of the same
 *   plugin on the same server, called alternately (target: ratio ≤ 1.2);
 * - one model whose predict is declared concurrent, 16 in flight, 4 children, 50 ms
 *   predicts: predicts/s against the four children's ceiling (80/s) and the same type
 *   undeclared (target: ≥ 80 % of the ceiling);
 * - batching (bench/plugins/batched.ts: 20 ms per call + 0.1 ms per item, sleep-bound as
 *   on an accelerator; up to 32 per batch, max_wait_ms 5), 2 children: predicts/s and p95
 *   at 64 in flight against its unbatched concurrent twin (target: ≥ 3×, p95 no worse),
 *   and p50 at 1 in flight (target: ≤ the twin's + max_wait_ms + 1 ms);
 * - instances deserialized per 1,000 predicts on one model, 16 in flight, against the
 *   number of children (target: ≤ it);
 * - the children's largest RSS while 20 models of 20 MB rotate through 4 children with
 *   resident_mb 100, against a child that served a 1 kB model plus resident_mb.
 * With `--before REF` the same runs go to that commit's server too, turn about (the
 * plugin copied into its checkout, so that it runs on that version's SDK).
 */
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgSchema } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { checkout } from "./checkout.ts";
import { alternateP50, bytes, createModel, type PlinthProcess, root, startPlinth, throughput, timed, unary } from "./grpc-calls.ts";
import { mnistFigures, onnxFigures } from "./real-models.ts";
import { printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
/** `--only a,b`: just these figures (large, busy, batching, loads, rss, mnist, onnx). */
const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1]!.split(",") : undefined;
const wanted = (figure: string) => !only || only.includes(figure);
const before = process.argv.includes("--before") ? process.argv[process.argv.indexOf("--before") + 1] : undefined;
const PLUGIN = "bench/plugins/weights.ts";
const BATCHED = "bench/plugins/batched.ts";
const MiB = 2 ** 20;

const json = (value: JsonValue): Arg => create(ArgSchema, { kind: { case: "json", value: fromJson(ValueSchema, value) } });

interface Answer {
  sum: number;
  pid: number;
  loads: number;
  rss: number;
}

const createWeights = (p: PlinthProcess, mb: number, modelType = "weights.Dense") => createModel(p.client, modelType, { kwargs: { mb: json(mb) } });

async function predict(p: PlinthProcess, body: Uint8Array): Promise<Answer> {
  const res = await unary(p.client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
  const prediction = res.action?.result?.prediction;
  if (res.action?.status !== ActionStatus.SUCCEEDED || prediction?.kind.case !== "json") {
    throw new Error(`predict ended ${ActionStatus[res.action?.status ?? 0]}: ${res.action?.error?.message}`);
  }
  return toJson(ValueSchema, prediction.kind.value) as unknown as Answer;
}

const predictBody = (modelId: string, ms = 0) =>
  bytes(PredictRequestSchema, { modelId, args: [json(1)], ...(ms ? { kwargs: { ms: json(ms) } } : {}), wait: true });

/** Figure 2: one model, 16 in flight, 4 children, 50 ms predicts: predicts/s of a concurrent type and of the same type undeclared. */
async function busyModel(from: string, plugin: string[]): Promise<{ shared: number; single: number }> {
  const p = await startPlinth(PLUGIN, { root: from, backend: "memory", engine: { max_children: 4, min_idle_workers: 4, max_queue: 10000 }, plugin });
  try {
    const shared = predictBody(await createWeights(p, 1 / 1024, "weights.Shared"), 50);
    const single = predictBody(await createWeights(p, 1 / 1024), 50);
    const ms = quick ? 2000 : 5000;
    await throughput(16, { count: 32 }, () => predict(p, shared));
    return { shared: await throughput(16, { ms }, () => predict(p, shared)), single: await throughput(16, { ms }, () => predict(p, single)) };
  } finally {
    await p.stop();
  }
}

/** Figure 3: batched predicts against the unbatched twin, 2 children: at 64 in flight, and at 1. */
async function batching(from: string) {
  const p = await startPlinth(BATCHED, { root: from, backend: "memory", engine: { max_children: 2, min_idle_workers: 2, max_queue: 10000 } });
  try {
    const body = async (modelType: string) =>
      bytes(PredictRequestSchema, { modelId: await createModel(p.client, modelType), args: [json(1)], wait: true });
    const [batched, single] = [await body("batched.Model"), await body("batched.Single")];
    const ms = quick ? 3000 : 8000;
    const run = (request: Uint8Array) => () => predict(p, request);
    await timed(64, { count: 256 }, run(batched));
    await timed(64, { count: 64 }, run(single));
    const busy = { batched: await timed(64, { ms }, run(batched)), single: await timed(64, { ms }, run(single)) };
    // One in flight, turn about.
    return { busy, alone: await alternateP50({ batched: () => predict(p, batched), single: () => predict(p, single) }, quick ? 40 : 150) };
  } finally {
    await p.stop();
  }
}

/** Figure 1: warm p50 of a 50 MB and a 1 kB model, called alternately. */
async function largeAgainstSmall(from: string, plugin: string[]): Promise<{ large: number; small: number }> {
  const p = await startPlinth(PLUGIN, { root: from, backend: "memory", engine: { max_children: 2 }, plugin });
  try {
    const large = predictBody(await createWeights(p, 50));
    const small = predictBody(await createWeights(p, 1 / 1024));
    // Warm: both children have started and seen each model.
    for (let i = 0; i < 4; i++) await Promise.all([predict(p, large), predict(p, small)]);
    return await alternateP50({ large: () => predict(p, large), small: () => predict(p, small) }, quick ? 10 : 30);
  } finally {
    await p.stop();
  }
}

/** Figure 4: deserializations over `count` predicts on one 1 MB model, 16 in flight, 4 children. */
async function loadsPerThousand(from: string, plugin: string[]): Promise<{ total: number; count: number; children: number }> {
  const p = await startPlinth(PLUGIN, { root: from, backend: "memory", engine: { max_children: 4, min_idle_workers: 4 }, plugin });
  try {
    const body = predictBody(await createWeights(p, 1));
    const count = quick ? 200 : 1000;
    const loads = new Map<number, number>();
    await throughput(16, { count }, async () => {
      const a = await predict(p, body);
      loads.set(a.pid, Math.max(loads.get(a.pid) ?? 0, a.loads));
    });
    const total = [...loads.values()].reduce((s, n) => s + n, 0);
    return { total, count, children: loads.size };
  } finally {
    await p.stop();
  }
}

/** Figure 5: the largest child RSS while 20 models of 20 MB rotate through 4 children. */
async function rotatingRss(from: string, plugin: string[]): Promise<{ peak: number; settled: number; baseline: number }> {
  const p = await startPlinth(PLUGIN, { root: from, engine: { max_children: 4, min_idle_workers: 4 }, plugin });
  try {
    // A child that served only a 1 kB model: the runtime's own memory.
    const tiny = predictBody(await createWeights(p, 1 / 1024));
    let baseline = 0;
    for (let i = 0; i < 8; i++) {
      const answers = await Promise.all(Array.from({ length: 4 }, () => predict(p, tiny)));
      baseline = Math.max(baseline, ...answers.map((a) => a.rss));
    }
    const models: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) models.push(predictBody(await createWeights(p, 20)));
    let peak = 0;
    let next = 0;
    const calls = quick ? 60 : 200;
    await throughput(4, { count: calls }, async () => {
      const a = await predict(p, models[next++ % models.length]!);
      peak = Math.max(peak, a.rss);
    });
    // Between calls: what the children keep, without a call's frame in flight.
    await new Promise((resolve) => setTimeout(resolve, 500));
    let settled = 0;
    for (let i = 0; i < 4; i++) {
      const answers = await Promise.all(Array.from({ length: 4 }, () => predict(p, tiny)));
      settled = Math.max(settled, ...answers.map((a) => a.rss));
    }
    return { peak: peak / MiB, settled: settled / MiB, baseline: baseline / MiB };
  } finally {
    await p.stop();
  }
}

/** A version of the code: its checkout, and its plugin lines (resident_mb where it has it). */
function version(name: string, dir: string) {
  const resident = (mb: number) => (hasResidentMb(dir) ? [`resident_mb: ${mb}`] : []);
  return { name, dir, resident };
}

function hasResidentMb(dir: string): boolean {
  try {
    return readFileSync(join(dir, "server/config/schema.ts"), "utf8").includes("resident_mb");
  } catch {
    return false;
  }
}

const versions = [version("this checkout", root)];
if (before) {
  const dir = checkout(before);
  copyFileSync(join(root, PLUGIN), join(dir, PLUGIN));
  versions.push(version(before, dir));
}

console.error(`measuring (${quick ? "quick" : "full"} run${before ? `, beside ${before}` : ""})…`);
const rows: string[][] = [];
const rounds = before ? 2 : 1;
for (let round = 0; round < rounds; round++) {
  for (const v of round % 2 ? [...versions].reverse() : versions) {
    const tag = `${v.name}${rounds > 1 ? `, round ${round + 1}` : ""}`;
    if (wanted("large")) {
      const f1 = await largeAgainstSmall(v.dir, v.resident(256));
      rows.push([
        `warm predict p50, 50 MB model (${tag})`,
        `${f1.large.toFixed(2)} ms`,
        `1 kB model ${f1.small.toFixed(2)} ms`,
        `ratio ≤ 1.2: ${(f1.large / f1.small).toFixed(2)}`,
      ]);
    }
    if (wanted("busy")) {
      const f2 = await busyModel(v.dir, v.resident(256));
      rows.push([
        `one concurrent model, 16 in flight, 4 children, 50 ms predicts (${tag})`,
        `${f2.shared.toFixed(1)}/s`,
        `ceiling 80/s; the same type undeclared ${f2.single.toFixed(1)}/s`,
        `≥ 80 % of ceiling: ${((f2.shared / 80) * 100).toFixed(0)} %`,
      ]);
    }
    // Batching is measured against its unbatched twin on this checkout only (code before it has no batches).
    if (v.dir === root && wanted("batching")) {
      const f3 = await batching(v.dir);
      const { busy, alone } = f3;
      rows.push([
        `batched predicts, 64 in flight, 2 children, 20 ms + 0.1 ms/item (${tag})`,
        `${busy.batched.rate.toFixed(0)}/s, p95 ${busy.batched.p95.toFixed(0)} ms`,
        `unbatched twin ${busy.single.rate.toFixed(0)}/s, p95 ${busy.single.p95.toFixed(0)} ms`,
        `≥ 3×, p95 no worse: ${(busy.batched.rate / busy.single.rate).toFixed(1)}×`,
      ]);
      rows.push([
        `batched predict p50 at 1 in flight, max_wait_ms 5 (${tag})`,
        `${alone.batched.toFixed(1)} ms`,
        `unbatched twin ${alone.single.toFixed(1)} ms`,
        `≤ ${(alone.single + 6).toFixed(1)} ms`,
      ]);
    }
    // The real models run on this checkout only: the code before has neither plugin.
    if (v.dir === root && wanted("mnist")) rows.push(...(await mnistFigures(quick)).map(([what, ...rest]) => [`${what} (${tag})`, ...rest]));
    if (v.dir === root && wanted("onnx")) rows.push(...(await onnxFigures(quick)).map(([what, ...rest]) => [`${what} (${tag})`, ...rest]));
    if (wanted("loads")) {
      const f4 = await loadsPerThousand(v.dir, v.resident(256));
      rows.push([`deserializations over ${f4.count} predicts, one model (${tag})`, String(f4.total), `${f4.children} children`, "≤ children"]);
    }
    if (wanted("rss")) {
      const f5 = await rotatingRss(v.dir, v.resident(100));
      rows.push([
        `largest child RSS, 20 × 20 MB models over 4 children (${tag})`,
        `${f5.peak.toFixed(0)} MiB during calls, ${f5.settled.toFixed(0)} MiB between them`,
        `a child with a 1 kB model ${f5.baseline.toFixed(0)} MiB + resident_mb 100`,
        `≤ ${(f5.baseline + 100).toFixed(0)} MiB`,
      ]);
    }
    console.error(`  ${tag}: done`);
  }
}
printTable(["what", "plinth", "baseline (same run)", "target"], rows);
