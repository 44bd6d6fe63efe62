/**
 * The child's main loop, on web-standard APIs only: load the plugin module, say
 * hello with its manifest, then answer calls read from the input, one at a time.
 * The runtime adapters (../adapters) supply the pipes and the signal.
 * @module
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { ValueSchema as JsonSchema } from "@bufbuild/protobuf/wkt";
import { fromJson, type JsonValue as PbJsonValue } from "@bufbuild/protobuf";
import { type Call, CallKind, ServerMessageSchema, WorkerMessageSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type CallKind as SdkCallKind, runCall } from "../_call.ts";
import { type Context, createLogger } from "../context.ts";
import type { Plugin } from "../plugin.ts";
import type { JsonValue } from "../values.ts";
import { decodeValue, encodeValue } from "./codec.ts";
import { FrameDecoder, frameHeader } from "./frames.ts";

/** What a runtime adapter provides to the worker. @internal */
export interface WorkerHost {
  runtime: "node" | "deno";
  pid: number;
  /** Bytes the server writes to the child's stdin. */
  input: AsyncIterable<Uint8Array>;
  /** Writes bytes to the protocol channel (the real stdout). */
  write(bytes: Uint8Array): Promise<void>;
  /** Registers the SIGTERM handler. */
  onTerminate(listener: () => void): void;
  /** Writes one line to stderr, which the server keeps as the log tail. */
  logLine(line: string): void;
  exit(code: number): void;
  maxFrameBytes: number;
  /** Minimum time between two progress frames of one call. */
  progressIntervalMs: number;
}

/** Exit code of a child that stopped because of SIGTERM (128 + 15, as a shell reports it). */
export const EXIT_TERMINATED = 143;

const kinds: Record<number, SdkCallKind | undefined> = {
  [CallKind.DATA_ACCESS]: "data_access",
  [CallKind.INSTANTIATE]: "instantiate",
  [CallKind.FIT]: "fit",
  [CallKind.PREDICT]: "predict",
};

function asPlugin(mod: unknown, url: string): Plugin {
  const plugin = (mod as { default?: unknown }).default as Plugin | undefined;
  if (!plugin || typeof plugin !== "object" || typeof plugin.name !== "string") {
    throw new TypeError(`${url} must export a plugin as default: export default definePlugin({ name, models, dataAccess })`);
  }
  return plugin;
}

function errorFields(error: unknown): { name: string; message: string; stack: string } {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, stack: error.stack ?? "" };
  }
  return { name: "Error", message: String(error), stack: "" };
}

/**
 * Serves one plugin module until the input ends or SIGTERM arrives; returns the exit code.
 * @internal
 */
export async function serveWorker(moduleUrl: string, host: WorkerHost): Promise<number> {
  let writing: Promise<void> = Promise.resolve();
  const send = (message: MessageInitShape<typeof WorkerMessageSchema>): Promise<void> => {
    const payload = toBinary(WorkerMessageSchema, create(WorkerMessageSchema, message));
    writing = writing.then(() => host.write(frameHeader(payload.byteLength))).then(() => host.write(payload));
    return writing;
  };

  let current: AbortController | undefined;
  let terminated = false;
  host.onTerminate(() => {
    terminated = true;
    if (current) current.abort(new DOMException("the action was cancelled", "AbortError"));
    else host.exit(EXIT_TERMINATED);
  });

  let plugin: Plugin;
  try {
    plugin = asPlugin(await import(moduleUrl), moduleUrl);
  } catch (error) {
    await send({ kind: { case: "failure", value: { callId: "", ...errorFields(error) } } });
    return 1;
  }
  const fn = (entries: Record<string, { description?: string }> | undefined) =>
    Object.entries(entries ?? {}).map(([name, f]) => ({ name, description: f.description ?? "" }));
  await send({
    kind: {
      case: "hello",
      value: {
        runtime: host.runtime,
        pid: host.pid,
        manifest: {
          name: plugin.name,
          description: plugin.description ?? "",
          modelTypes: fn(plugin.models),
          dataAccess: fn(plugin.dataAccess),
        },
      },
    },
  });

  const handle = async (call: Call): Promise<void> => {
    const controller = new AbortController();
    current = controller;
    let latest: { state: JsonValue } | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let lastSent = 0;
    const flush = () => {
      timer = undefined;
      if (!latest) return;
      const state = fromJson(JsonSchema, JSON.parse(JSON.stringify(latest.state ?? null)) as PbJsonValue);
      latest = undefined;
      lastSent = Date.now();
      send({ kind: { case: "progress", value: { callId: call.callId, state } } }).catch(() => {});
    };
    const ctx: Context = {
      callId: call.callId,
      signal: controller.signal,
      log: createLogger(host.logLine),
      report(state) {
        latest = { state };
        timer ??= setTimeout(flush, Math.max(0, lastSent + host.progressIntervalMs - Date.now()));
      },
    };
    try {
      const kind = kinds[call.kind];
      if (!kind) throw new TypeError(`unknown call kind ${call.kind}`);
      const kwargs = Object.fromEntries(Object.entries(call.kwargs).map(([k, v]) => [k, decodeValue(v)]));
      const out = await runCall(plugin, { kind, target: call.target, instance: call.instance, args: call.args.map(decodeValue), kwargs }, ctx);
      clearTimeout(timer);
      flush();
      const result = { callId: call.callId, value: encodeValue(out.value) };
      await send({
        kind: { case: "result", value: out.instance ? { ...result, instance: out.instance } : result },
      });
    } catch (error) {
      clearTimeout(timer);
      flush();
      await send({ kind: { case: "failure", value: { callId: call.callId, ...errorFields(error) } } });
    } finally {
      current = undefined;
    }
  };

  // Calls run one at a time in arrival order; reading goes on meanwhile so that the end
  // of the input (the server closed the pipe, or died) is noticed during a call.
  let chain: Promise<void> = Promise.resolve();
  const decoder = new FrameDecoder(host.maxFrameBytes);
  for await (const chunk of host.input) {
    for (const frame of decoder.push(chunk)) {
      const message = fromBinary(ServerMessageSchema, frame);
      if (message.kind.case === "call") {
        const call = message.kind.value;
        chain = chain
          .then(() => (terminated ? undefined : handle(call)))
          .then(() => {
            if (terminated) host.exit(EXIT_TERMINATED);
          });
      }
    }
  }
  current?.abort(new DOMException("the server closed the pipe", "AbortError"));
  await chain;
  await writing.catch(() => {});
  return 0;
}
