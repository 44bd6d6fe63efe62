/**
 * What the gRPC benchmarks share: measuring (latencies, throughput), a Plinth server
 * process with a config of the benchmark's choosing, and raw @grpc/grpc-js calls that
 * take and give encoded bytes, so that the client's own encoding stays out of the figures.
 */
import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, type DescMessage, fromBinary, type MessageInitShape, toBinary, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import {
  CancelActionRequestSchema,
  CancelActionResponseSchema,
  WatchActionRequestSchema,
  WatchActionResponseSchema,
} from "../gen/plinth/v1/action_service_pb.ts";
import type { Arg } from "../gen/plinth/v1/arg_pb.ts";
import {
  CreateInstanceRequestSchema,
  CreateInstanceResponseSchema,
  PredictRequestSchema,
  PredictResponseSchema,
} from "../gen/plinth/v1/engine_service_pb.ts";
import { percentile } from "./report.ts";
import { startProcess } from "./servers.ts";
import { tempDir } from "./temp.ts";

export const root = fileURLToPath(new URL("..", import.meta.url));

/** Sequential calls: their p50 and p95 in ms. */
export async function latencies(n: number, fn: () => Promise<unknown>): Promise<{ p50: number; p95: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p95: percentile(times, 95) };
}

/** Latencies of `fn` over `inFlight` lanes for `ms` or `count` calls, in ms: p50 and p95; and the throughput. */
export async function timed(inFlight: number, limit: { ms: number } | { count: number }, fn: () => Promise<unknown>) {
  const times: number[] = [];
  const rate = await throughput(inFlight, limit, async () => {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  });
  times.sort((a, b) => a - b);
  return { rate, p50: percentile(times, 50), p95: percentile(times, 95), count: times.length };
}

/** Each call's p50 at 1 in flight, the calls made in turn `n` times each (so both see the same machine). */
export async function alternateP50<K extends string>(calls: Record<K, () => Promise<unknown>>, n: number): Promise<Record<K, number>> {
  const entries = Object.entries(calls) as [K, () => Promise<unknown>][];
  const times = new Map<K, number[]>(entries.map(([name]) => [name, []]));
  for (let i = 0; i < n; i++) {
    for (const [name, call] of entries) {
      const start = performance.now();
      await call();
      times.get(name)!.push(performance.now() - start);
    }
  }
  const p50 = (t: number[]) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)]!;
  return Object.fromEntries(entries.map(([name]) => [name, p50(times.get(name)!)])) as Record<K, number>;
}

/** Calls per second with `inFlight` calls outstanding at all times, for `ms` or `count` calls. */
export async function throughput(
  inFlight: number,
  limit: { ms: number } | { count: number },
  fn: (lane: number) => Promise<unknown>,
): Promise<number> {
  let done = 0;
  let started = 0;
  const end = "ms" in limit ? performance.now() + limit.ms : Infinity;
  const more = () => ("ms" in limit ? performance.now() < end : started++ < limit.count);
  const start = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, lane) => {
      while (more()) {
        await fn(lane);
        done++;
      }
    }),
  );
  return done / ((performance.now() - start) / 1000);
}

export interface PlinthProcess {
  child: ChildProcess;
  port: number;
  /** What it printed up to "serving" (its HTTP listener's address, say). */
  output(): string;
  client: grpc.Client;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<void>;
}

/** `server/main.ts` as its own process, on a temporary database, with `plugin` and these engine keys. */
export async function startPlinth(
  plugin: string,
  options: {
    engine?: Record<string, unknown>;
    runtime?: string;
    backend?: string;
    /** backend postgres: its URL. */
    url?: string;
    maxMessageBytes?: number;
    /** More lines under `server:` (tls, auth), and how the client connects to it then. */
    server?: string[];
    credentials?: grpc.ChannelCredentials;
    /** More top-level lines of the config (metrics, say). */
    config?: string[];
    /** More lines of the plugin's entry (resident_mb, say). */
    plugin?: string[];
    /** The checkout whose server runs (bench/checkout.ts: the code before a change); this one by default. */
    root?: string;
  } = {},
): Promise<PlinthProcess> {
  const from = options.root ?? root;
  const dir = tempDir();
  const config = join(dir, "plinth.yaml");
  const yaml = [
    "server:",
    "  address: 127.0.0.1:0",
    ...(options.server ?? []).map((line) => `  ${line}`),
    "backend:",
    `  kind: ${options.backend ?? "sqlite"}`,
    options.url ? `  url: ${options.url}` : `  path: ${join(dir, "plinth.db")}`,
    "engine:",
    ...Object.entries(options.engine ?? {}).map(([k, v]) => `  ${k}: ${v}`),
    "plugins:",
    `  - module: ${join(from, plugin)}`,
    `    runtime: ${options.runtime ?? "node"}`,
    ...(options.plugin ?? []).map((line) => `    ${line}`),
    ...(options.config ?? []),
  ].join("\n");
  writeFileSync(config, yaml);
  const server = await startProcess(["server/main.ts", "--config", config], /"address":"127\.0\.0\.1:(\d+)","msg":"serving"/, from);
  const host = options.credentials ? "localhost" : "127.0.0.1";
  const client = new grpc.Client(`${host}:${server.port}`, options.credentials ?? grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": options.maxMessageBytes ?? -1,
  });
  return {
    ...server,
    client,
    async stop() {
      client.close();
      await stop(server.child);
    },
  };
}

export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

/** One unary call with bytes in and a decoded answer out. */
export function unary<Res>(client: grpc.Client, path: string, request: Uint8Array, decode: (b: Uint8Array) => Res): Promise<Res> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      (b: Buffer) => decode(b),
      request,
      (error, value) => (error ? reject(error) : resolve(value!)),
    ),
  );
}

export const bytes = <S extends DescMessage>(schema: S, init: MessageInitShape<S>) => toBinary(schema, create(schema, init));

/** A new model of `modelType`, created with these arguments; its id. */
export async function createModel(
  client: grpc.Client,
  modelType: string,
  init: { args?: Arg[]; kwargs?: Record<string, Arg> } = {},
): Promise<string> {
  const request = bytes(CreateInstanceRequestSchema, { modelType, ...init, wait: true });
  const res = await unary(client, "/plinth.v1.EngineService/CreateInstance", request, (b) => fromBinary(CreateInstanceResponseSchema, b));
  if (res.action?.status !== ActionStatus.SUCCEEDED) throw new Error(`create ${modelType} failed: ${res.action?.error?.message}`);
  return res.action.modelId;
}

/**
 * A predict on `modelId` without wait, followed by WatchAction until its plugin first
 * reports: its action's id and that state (bench.Sleeper's and bench.Poller's hold their
 * child's pid).
 */
export async function startReporting(client: grpc.Client, modelId: string): Promise<{ actionId: string; state: unknown }> {
  const res = await unary(client, "/plinth.v1.EngineService/Predict", bytes(PredictRequestSchema, { modelId }), (b) =>
    fromBinary(PredictResponseSchema, b),
  );
  const actionId = res.action!.id;
  let state: unknown;
  await new Promise<void>((resolve, reject) => {
    const stream = client.makeServerStreamRequest(
      "/plinth.v1.ActionService/WatchAction",
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(WatchActionResponseSchema, b),
      bytes(WatchActionRequestSchema, { actionId }),
    );
    stream.on("data", (update: { action?: { state?: Value } }) => {
      if (update.action?.state) {
        state = toJson(ValueSchema, update.action.state);
        stream.cancel();
        resolve();
      }
    });
    stream.on("error", (e: grpc.ServiceError) => (e.code === grpc.status.CANCELLED ? undefined : reject(e)));
  });
  return { actionId, state };
}

/** CancelAction's round trip, until the child is gone; `cooperative`: the plugin must have stopped by itself (no SIGKILL). */
export async function cancelMs(client: grpc.Client, actionId: string, cooperative = true): Promise<number> {
  const start = performance.now();
  const res = await unary(client, "/plinth.v1.ActionService/CancelAction", bytes(CancelActionRequestSchema, { actionId }), (b) =>
    fromBinary(CancelActionResponseSchema, b),
  );
  if (res.action?.status !== ActionStatus.CANCELLED) throw new Error(`cancel did not cancel: ${res.action?.status}`);
  if (cooperative && res.action.cancel?.forced) throw new Error("the plugin needed SIGKILL");
  return performance.now() - start;
}
