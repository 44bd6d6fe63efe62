/**
 * bench:serving's real-model figures (`--only mnist,onnx`): a TensorFlow.js network on
 * MNIST (plugins/mnist) and the same network as an ONNX graph (plugins/onnx), each
 * served batched beside its unbatched twin on the same server, and beside the plugin's
 * own predict called in-process with the batch sizes the engine formed (the floor:
 * what is left is the engine's share).
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import type { Action } from "../gen/plinth/v1/action_pb.ts";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgSchema, DType } from "../gen/plinth/v1/arg_pb.ts";
import {
  AddInstanceRequestSchema,
  AddInstanceResponseSchema,
  FitRequestSchema,
  FitResponseSchema,
  GetModelRequestSchema,
  GetModelResponseSchema,
  PredictRequestSchema,
  PredictResponseSchema,
} from "../gen/plinth/v1/engine_service_pb.ts";
import { digits } from "../plugins/mnist/digits.ts";
import { decode } from "../plugins/mnist/network.ts";
import { classify } from "../plugins/mnist/predict.ts";
import onnx from "../plugins/onnx/mod.ts";
import { buildMnistOnnx } from "../scripts/build-onnx.ts";
import { type BatchItem, type PluginValue, Tensor } from "../sdk/mod.ts";
import { allProcesses, procStat } from "../server/process/proc.ts";
import { alternateP50, bytes, createModel, type PlinthProcess, startPlinth, timed, unary } from "./grpc-calls.ts";
import { rssMiB } from "./report.ts";

export type Row = string[];

const tensor = (dtype: DType, shape: number[], data: ArrayBufferView): Arg =>
  create(ArgSchema, { kind: { case: "tensor", value: { dtype, shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) } } });
/** JSON text arguments by name. */
const jsonKwargs = (kwargs: Record<string, unknown>): Record<string, Arg> =>
  Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, create(ArgSchema, { kind: { case: "jsonText", value: JSON.stringify(v) } })]));
const dataAccess = (name: string, kwargs: Record<string, number>): Arg =>
  create(ArgSchema, {
    kind: {
      case: "dataAccess",
      value: { name, kwargs: jsonKwargs(kwargs) },
    },
  });

/** The pids whose parent is `pid`: a server's plugin children. */
export function childrenOf(pid: number): number[] {
  return [...allProcesses()].filter(([, stat]) => stat.ppid === pid).map(([child]) => child);
}

/** CPU seconds a process has used (user and system; 0 once it is gone). */
const cpuSeconds = (pid: number) => (procStat(pid)?.cpuTicks ?? 0) / 100; // clock ticks, 100 a second here

/** CPU seconds of a server and of its children so far. */
const cpuOf = (p: PlinthProcess) => ({
  server: cpuSeconds(p.child.pid!),
  children: childrenOf(p.child.pid!).reduce((sum, pid) => sum + cpuSeconds(pid), 0),
});

/** The largest RSS among a server's children, in MiB. */
const childRss = (p: PlinthProcess) => Math.max(0, ...childrenOf(p.child.pid!).map((pid) => rssMiB(pid)));

export async function predictAction(p: PlinthProcess, body: Uint8Array): Promise<Action> {
  const res = await unary(p.client, "/plinth.v1.EngineService/Predict", body, (b) => fromBinary(PredictResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED)
    throw new Error(`predict ended ${ActionStatus[res.action?.status ?? 0]}: ${res.action?.error?.message}`);
  return res.action;
}

/** The int32 tensor a predict answered. */
function digitsOf(action: Action): Int32Array {
  const prediction = action.result?.prediction;
  if (prediction?.kind.case !== "tensor") throw new Error(`expected a tensor, got ${prediction?.kind.case}`);
  return new Int32Array(new Uint8Array(prediction.kind.value.data).buffer);
}

/** A model with the instance of `modelId` (its latest revision), of another type that reads the same bytes. */
export async function twin(p: PlinthProcess, modelId: string, modelType: string): Promise<{ id: string; instance: Uint8Array }> {
  const got = await unary(p.client, "/plinth.v1.EngineService/GetModel", bytes(GetModelRequestSchema, { modelId, includeInstance: true }), (b) =>
    fromBinary(GetModelResponseSchema, b),
  );
  const instance = got.model!.instance;
  const added = await unary(p.client, "/plinth.v1.EngineService/AddInstance", bytes(AddInstanceRequestSchema, { modelType, instance }), (b) =>
    fromBinary(AddInstanceResponseSchema, b),
  );
  return { id: added.model!.id, instance };
}

export interface Served {
  rate: number;
  p50: number;
  p95: number;
  /** The mean size of the batches the predicts went in (1 unbatched). */
  batch: number;
  /** CPU per predict, in ms: the server's, and its children's. */
  cpu: { server: number; children: number };
}

/** One image per predict, `inFlight` at once for `ms`, the bodies taken in turn. */
export async function serve(p: PlinthProcess, bodies: Uint8Array[], inFlight: number, ms: number): Promise<Served> {
  const sizes: number[] = [];
  let next = 0;
  const before = cpuOf(p);
  const { rate, p50, p95, count } = await timed(inFlight, { ms }, async () => {
    sizes.push((await predictAction(p, bodies[next++ % bodies.length]!)).batch?.size ?? 1);
  });
  const after = cpuOf(p);
  const perPredict = (seconds: number) => (seconds * 1000) / count;
  return {
    rate,
    p50,
    p95,
    batch: sizes.reduce((a, b) => a + b, 0) / sizes.length,
    cpu: { server: perPredict(after.server - before.server), children: perPredict(after.children - before.children) },
  };
}

/** Calls of `fn` per second over about `ms`, in this process, after five to warm up. */
export async function inProcess(ms: number, fn: () => unknown): Promise<number> {
  for (let i = 0; i < 5; i++) await fn();
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    await fn();
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

export const servedRows = (what: string, batched: Served, single: Served, floor: { batched: number; single: number }): Row[] => [
  [
    `${what}: one image per predict, 64 in flight, batched (mean batch ${batched.batch.toFixed(1)})`,
    `${batched.rate.toFixed(0)}/s, p50 ${batched.p50.toFixed(1)} ms, p95 ${batched.p95.toFixed(1)} ms`,
    `unbatched twin ${single.rate.toFixed(0)}/s, p50 ${single.p50.toFixed(1)} ms, p95 ${single.p95.toFixed(1)} ms`,
    `≥ 3×: ${(batched.rate / single.rate).toFixed(1)}×`,
  ],
  [
    `${what}: CPU per predict, server + children`,
    `batched ${batched.cpu.server.toFixed(2)} + ${batched.cpu.children.toFixed(2)} ms`,
    `unbatched ${single.cpu.server.toFixed(2)} + ${single.cpu.children.toFixed(2)} ms`,
    "—",
  ],
  [
    `${what}: the plugin's predict in-process, one thread (the floor)`,
    `batches of ${Math.round(batched.batch)}: ${floor.batched.toFixed(0)} images/s`,
    `batches of 1: ${floor.single.toFixed(0)} images/s`,
    `engine: ${((batched.rate / floor.batched) * 100).toFixed(0)} % and ${((single.rate / floor.single) * 100).toFixed(0)} % of it`,
  ],
];

/** MNIST: the fit and its held-out accuracy, batched against unbatched, the floor, the children's RSS. */
export async function mnistFigures(quick: boolean): Promise<Row[]> {
  const p = await startPlinth("bench/plugins/mnist-twins.ts", {
    backend: "memory",
    engine: { max_children: 2, min_idle_workers: 2, max_queue: 10000 },
  });
  try {
    const idle = childRss(p);
    const modelId = await createModel(p.client, "mnist.MLP", { kwargs: jsonKwargs({ hidden: [128] }) });
    const started = performance.now();
    const fit = await unary(
      p.client,
      "/plinth.v1.EngineService/Fit",
      bytes(FitRequestSchema, {
        modelId,
        args: [dataAccess("mnist.digits", { start: 0, count: 8000 })],
        kwargs: jsonKwargs({ epochs: 5 }),
        wait: true,
      }),
      (b) => fromBinary(FitResponseSchema, b),
    );
    const fitSeconds = (performance.now() - started) / 1000;
    if (fit.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`fit failed: ${fit.action?.error?.message}`);
    const held = digits(8000, 2000);
    const all = await predictAction(
      p,
      bytes(PredictRequestSchema, { modelId, args: [dataAccess("mnist.images", { start: 8000, count: 2000 })], wait: true }),
    );
    const accuracy = digitsOf(all).filter((d, i) => d === held.labels[i]).length / 2000;

    const single = await twin(p, modelId, "mnist.Unbatched");
    const image = (i: number) => tensor(DType.FLOAT32, [1, 784], held.images.subarray(i * 784, (i + 1) * 784));
    const bodies = (id: string) => Array.from({ length: 256 }, (_, i) => bytes(PredictRequestSchema, { modelId: id, args: [image(i)], wait: true }));
    const [batchedBodies, singleBodies] = [bodies(modelId), bodies(single.id)];
    const ms = quick ? 3000 : 8000;
    await serve(p, batchedBodies, 64, 1000);
    await serve(p, singleBodies, 64, 1000);
    const batched = await serve(p, batchedBodies, 64, ms);
    const unbatched = await serve(p, singleBodies, 64, ms);
    const resident = childRss(p);

    const net = decode(single.instance);
    const requests = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ images: held.images.subarray(i * 784, (i + 1) * 784), probabilities: false }));
    const size = Math.max(1, Math.round(batched.batch));
    const floor = {
      batched: size * (await inProcess(quick ? 1000 : 3000, () => classify(net, requests(size)))),
      single: await inProcess(quick ? 1000 : 3000, () => classify(net, requests(1))),
    };
    return [
      [
        "MNIST: held-out accuracy (2,000 digits) after a fit on 8,000, 784-128-10",
        accuracy.toFixed(3),
        `fit: 5 epochs in ${fitSeconds.toFixed(1)} s`,
        "≥ 0.92",
      ],
      ...servedRows("MNIST (TF.js wasm), 2 children", batched, unbatched, floor),
      ["MNIST: largest child RSS, the model resident", `${resident.toFixed(0)} MiB`, `a child before any model ${idle.toFixed(0)} MiB`, "—"],
    ];
  } finally {
    await p.stop();
  }
}

type BatchRun = (ctx: unknown, instance: unknown, items: BatchItem[]) => Promise<(PluginValue | Error)[]>;

/** ONNX (the MNIST network as a graph): batched against unbatched, the floor, 20 MB against 100 kB, the children's RSS. */
export async function onnxFigures(quick: boolean): Promise<Row[]> {
  const held = digits(8000, 256);
  const image = (i: number) => tensor(DType.FLOAT32, [1, 784], held.images.subarray(i * 784, (i + 1) * 784));
  const [mlp, large, small] = [
    await buildMnistOnnx({ hidden: 128, epochs: 0 }),
    await buildMnistOnnx({ hidden: 6400, epochs: 0 }),
    await buildMnistOnnx({ hidden: 32, epochs: 0 }),
  ];
  const file = (bytes: Uint8Array) => [create(ArgSchema, { kind: { case: "bytes", value: bytes } })];
  const p = await startPlinth("bench/plugins/onnx-twins.ts", {
    backend: "memory",
    engine: { max_children: 2, min_idle_workers: 2, max_queue: 10000 },
  });
  try {
    const idle = childRss(p);
    const [batchedId, singleId] = [
      await createModel(p.client, "onnx.Model", { args: file(mlp.bytes) }),
      await createModel(p.client, "onnx.Unbatched", { args: file(mlp.bytes) }),
    ];
    const bodies = (id: string) => Array.from({ length: 256 }, (_, i) => bytes(PredictRequestSchema, { modelId: id, args: [image(i)], wait: true }));
    const [batchedBodies, singleBodies] = [bodies(batchedId), bodies(singleId)];
    const ms = quick ? 3000 : 8000;
    await serve(p, batchedBodies, 64, 1000);
    await serve(p, singleBodies, 64, 1000);
    const batched = await serve(p, batchedBodies, 64, ms);
    const unbatched = await serve(p, singleBodies, 64, ms);

    // 20 MB against 100 kB, one image at a time, called in turn once both children hold both.
    const [largeId, smallId] = [
      await createModel(p.client, "onnx.Model", { args: file(large.bytes) }),
      await createModel(p.client, "onnx.Model", { args: file(small.bytes) }),
    ];
    const one = (id: string) => bytes(PredictRequestSchema, { modelId: id, args: [image(0)], wait: true });
    const warm = { large: one(largeId), small: one(smallId) };
    for (let i = 0; i < 4; i++)
      await Promise.all([predictAction(p, warm.large), predictAction(p, warm.small), predictAction(p, warm.large), predictAction(p, warm.small)]);
    const p50 = await alternateP50({ large: () => predictAction(p, warm.large), small: () => predictAction(p, warm.small) }, quick ? 40 : 150);
    const resident = childRss(p);

    // In-process: the plugin's own predict on the batch sizes the engine formed, and each model's own run.
    const type = onnx.models!["onnx.Model"]!;
    const run = (type.predict as unknown as { run: BatchRun }).run;
    const ctx = { signal: new AbortController().signal };
    const items = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        args: [new Tensor("float32", [1, 784], held.images.slice(i * 784, (i + 1) * 784))],
        kwargs: {},
      })) as unknown as BatchItem[];
    const rate = async (instance: unknown, n: number) => {
      const batch = items(n);
      return n * (await inProcess(quick ? 1000 : 3000, () => run(ctx, instance, batch)));
    };
    const instance = await type.deserialize!(mlp.bytes);
    const size = Math.max(1, Math.round(batched.batch));
    const floor = { batched: await rate(instance, size), single: await rate(instance, 1) };
    const own = {
      large: 1000 / (await rate(await type.deserialize!(large.bytes), 1)),
      small: 1000 / (await rate(await type.deserialize!(small.bytes), 1)),
    };
    const ratio = p50.large / p50.small;
    return [
      ...servedRows("ONNX Runtime, the 784-128-10 graph, 2 children", batched, unbatched, floor),
      [
        `ONNX: warm predict p50 at 1 in flight, ${(large.bytes.byteLength / 1e6).toFixed(1)} MB model (784-6400-10)`,
        `${p50.large.toFixed(2)} ms`,
        `${(small.bytes.byteLength / 1e3).toFixed(0)} kB model (784-32-10) ${p50.small.toFixed(2)} ms; their own run in-process ${own.large.toFixed(2)} and ${own.small.toFixed(2)} ms`,
        `≤ 1.2×: ${ratio.toFixed(2)}× (${(p50.large - own.large - (p50.small - own.small)).toFixed(2)} ms apart beyond their own run)`,
      ],
      [
        "ONNX: largest child RSS, 20.4 MB + 0.4 MB + 0.1 MB models resident",
        `${resident.toFixed(0)} MiB`,
        `a child before any model ${idle.toFixed(0)} MiB`,
        "—",
      ],
    ];
  } finally {
    await p.stop();
  }
}
