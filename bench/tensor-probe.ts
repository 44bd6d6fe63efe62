import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { DType } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { bytes, createModel, latencies, startPlinth, stop, unary } from "./grpc-calls.ts";
import { startProcess } from "./servers.ts";

const tensorData = new Uint8Array(new Float32Array(256 * 1024).map((_, i) => i / 7).buffer);
const echo = await startProcess(["bench/echo-server.ts"], /^(\d+)\n/);
const echoClient = new grpc.Client(`127.0.0.1:${echo.port}`, grpc.credentials.createInsecure(), { "grpc.max_receive_message_length": -1 });
const extra = process.env.RETAIN ? { retain_actions_mb: Number(process.env.RETAIN) } : {};
const plinth = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 2, max_queue: 10000, ...extra } });
import { createWriteStream } from "node:fs";
if (process.env.GCLOG) plinth.child.stdout!.pipe(createWriteStream(process.env.GCLOG));
const model = await createModel(plinth.client, "bench.Trivial");
const body = bytes(PredictRequestSchema, {
  modelId: model,
  args: [{ kind: { case: "tensor", value: { dtype: DType.FLOAT32, shape: [256, 1024], data: tensorData } } }],
  wait: true,
});
const predict = async () => {
  const res = await unary(plinth.client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error("failed");
};
const echoCall = () => unary(echoClient, "/bench.Echo/Echo", body, (b) => b);
await latencies(10, predict);
await latencies(10, echoCall);
for (let r = 0; r < 3; r++) {
  const p = await latencies(100, predict);
  const e = await latencies(100, echoCall);
  console.log(
    `plinth p50 ${p.p50.toFixed(2)} p95 ${p.p95.toFixed(2)} | echo p50 ${e.p50.toFixed(2)} p95 ${e.p95.toFixed(2)} | ${(p.p50 / e.p50).toFixed(1)}x`,
  );
}
await plinth.stop();
echoClient.close();
await stop(echo.child);
