/**
 * `npm run bench:payloads`: real-sized payloads through the whole engine, each beside a
 * bare @grpc/grpc-js echo of the same bytes measured in the same run.
 *
 * - Predict with a 55 kB JSON batch (5,000 numbers) echoed back by the plugin, 64 in
 *   flight, as json_text and as json (google.protobuf.Value); the server's RSS sampled
 *   throughout.
 * - Predict with a 1 MB float32 tensor echoed back, one at a time: p50 latency.
 *
 * The server runs as its own process (as in production); this process is the client.
 */
import { fromBinary, fromJson, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { type Arg, DType } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { bytes, createModel, latencies, startPlinth, stop, throughput, unary } from "./grpc-calls.ts";
import { batch, batchText } from "./json-batch.ts";
import { printTable, rssMiB } from "./report.ts";
import { startProcess } from "./servers.ts";

const quick = process.argv.includes("--quick");
const TEXT_ACTIONS = quick ? 2500 : 10_000;
const VALUE_ACTIONS = quick ? 300 : 2000;
const TENSOR_CALLS = quick ? 20 : 100;
const IN_FLIGHT = 64;

const tensorData = new Uint8Array(new Float32Array(256 * 1024).map((_, i) => i / 7).buffer); // 1 MiB

type ArgInit = NonNullable<MessageInitShape<typeof PredictRequestSchema>["args"]>;
const request = (modelId: string, args: ArgInit) => bytes(PredictRequestSchema, { modelId, args, wait: true });
const textArgs: ArgInit = [{ kind: { case: "jsonText", value: batchText } }];
const valueArgs: ArgInit = [{ kind: { case: "json", value: fromJson(ValueSchema, batch) } }];
const tensorArgs: ArgInit = [{ kind: { case: "tensor", value: { dtype: DType.FLOAT32, shape: [256, 1024], data: tensorData } } }];

/** A predict that must succeed and echo `size` bytes' worth of its argument. */
async function predict(client: grpc.Client, body: Uint8Array, check: (prediction: Arg | undefined) => boolean): Promise<void> {
  const res = await unary(client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`predict failed: ${res.action?.error?.message}`);
  if (!check(res.action.result?.prediction)) throw new Error(`predict answered ${res.action.result?.prediction?.kind.case}`);
}
const isText = (p: Arg | undefined) => p?.kind.case === "jsonText" && p.kind.value.length === batchText.length;
const isValue = (p: Arg | undefined) =>
  p?.kind.case === "json" && p.kind.value.kind.case === "listValue" && p.kind.value.kind.value.values.length === 5000;
const isTensor = (p: Arg | undefined) => p?.kind.case === "tensor" && p.kind.value.data.byteLength === tensorData.byteLength;

const rows: string[][] = [];
const row = (...cells: string[]) => {
  rows.push(cells);
  console.error(`  ${cells[0]}: ${cells[1]}`);
};
const pct = (x: number, of: number) => `${((x / of) * 100).toFixed(0)}%`;

console.error(`measuring (${quick ? "quick" : "full"} run)…`);

// Baseline: the same request bytes echoed by a bare grpc-js server, kept running so that
// its figures are measured next to Plinth's, turn and turn about (this machine's speed
// drifts by a factor of ~1.5 over minutes).
const echo = await startProcess(["bench/echo-server.ts"], /^(\d+)\n/);
const echoClient = new grpc.Client(`127.0.0.1:${echo.port}`, grpc.credentials.createInsecure(), { "grpc.max_receive_message_length": -1 });
const echoOf = (body: Uint8Array) => () => unary(echoClient, "/bench.Echo/Echo", body, (b) => b);
const textBody = request("m-bench", textArgs);
const tensorBody = request("m-bench", tensorArgs);
await throughput(IN_FLIGHT, { ms: 1000 }, echoOf(textBody));

// Plinth: the trivial plugin echoes its first argument.
const plinth = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000 } });
const { client } = plinth;
const pid = plinth.child.pid!;
const models = await Promise.all(Array.from({ length: IN_FLIGHT }, () => createModel(client, "bench.Trivial")));
const textBodies = models.map((m) => request(m, textArgs));
const textLoad = (count: number) => throughput(IN_FLIGHT, { count }, (lane) => predict(client, textBodies[lane]!, isText));
/** V8 gives memory back once the server has been idle for ~10 s (its memory reducer). */
const idle = async () => {
  await new Promise((resolve) => setTimeout(resolve, 15_000));
  return rssMiB(pid);
};
const freshRss = rssMiB(pid);
await textLoad(1000);
const warmRss = await idle();
let peakRss = warmRss;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(pid))), 50);
const rssAt: number[] = [];
const started = performance.now();
for (let fifth = 0; fifth < 5; fifth++) {
  await textLoad(TEXT_ACTIONS / 5);
  rssAt.push(rssMiB(pid));
}
const textRate = TEXT_ACTIONS / ((performance.now() - started) / 1000);
const textPeak = peakRss;
// The ratio to echo: three rounds of 2 s each, echo then Plinth, and the median of each.
const echoRates: number[] = [];
const plinthRates: number[] = [];
for (let round = 0; round < 3; round++) {
  echoRates.push(await throughput(IN_FLIGHT, { ms: 2000 }, echoOf(textBody)));
  plinthRates.push(await throughput(IN_FLIGHT, { ms: 2000 }, (lane) => predict(client, textBodies[lane]!, isText)));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const echoRate = median(echoRates);
const pairedRate = median(plinthRates);
const afterRss = await idle();
peakRss = 0;
const valueBodies = models.map((m) => request(m, valueArgs));
const valueRate = await throughput(IN_FLIGHT, { count: VALUE_ACTIONS }, (lane) => predict(client, valueBodies[lane]!, isValue));
clearInterval(sampler);
const valuePeak = peakRss;
const tensorModel = request(models[0]!, tensorArgs);
await latencies(5, () => predict(client, tensorModel, isTensor));
await latencies(5, echoOf(tensorBody));
const tensor = await latencies(TENSOR_CALLS, () => predict(client, tensorModel, isTensor));
const echoTensor = await latencies(TENSOR_CALLS, echoOf(tensorBody));
await plinth.stop();
echoClient.close();
await stop(echo.child);

row(
  `predict, 55 kB JSON as json_text echoed, ${IN_FLIGHT} in flight: ${TEXT_ACTIONS} actions / turn about with echo`,
  `${textRate.toFixed(0)} / ${pairedRate.toFixed(0)} actions/s`,
  `echo of the same bytes: ${echoRate.toFixed(0)} calls/s`,
  `≥ 25% of echo: ${pct(pairedRate, echoRate)}`,
);
row(
  `server RSS: idle after 1,000 such actions / after each fifth of the ${TEXT_ACTIONS} / peak`,
  `${warmRss.toFixed(0)} / ${rssAt.map((r) => r.toFixed(0)).join(", ")} / ${textPeak.toFixed(0)} MiB`,
  `fresh server ${freshRss.toFixed(0)} MiB`,
  `flat, peak ≤ idle + 100 MiB: +${(textPeak - warmRss).toFixed(0)} MiB`,
);
row("server RSS idle again, 15 s after the load", `${afterRss.toFixed(0)} MiB`, "", "< ~200 MiB");
row(
  `same as json (google.protobuf.Value), ${IN_FLIGHT} in flight (${VALUE_ACTIONS} actions)`,
  `${valueRate.toFixed(0)} actions/s (RSS peak ${valuePeak.toFixed(0)} MiB)`,
  `echo of the json_text bytes: ${echoRate.toFixed(0)} calls/s`,
  `${pct(valueRate, echoRate)} of echo`,
);
row(
  "predict, 1 MB float32 tensor echoed, one at a time, p50 / p95",
  `${tensor.p50.toFixed(2)} / ${tensor.p95.toFixed(2)} ms`,
  `echo of the same message: ${echoTensor.p50.toFixed(2)} / ${echoTensor.p95.toFixed(2)} ms`,
  `p50 ≤ 3× echo: ${(tensor.p50 / echoTensor.p50).toFixed(1)}×`,
);

printTable(["what", "plinth", "baseline (same run)", "target"], rows);
