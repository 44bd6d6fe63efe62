/**
 * The plugin's thread inside a child: loads the plugin module, runs each call and
 * writes what the server should get (hello, progress, result, failure) as frames on
 * the protocol channel. On web-standard APIs only; the runtime adapters
 * (../adapters/*-thread.ts) supply the port to the main thread and the channel.
 *
 * Running plugin code here, not on the child's main thread, is what lets a CPU-bound
 * plugin be cancelled and watched: the main thread stays free to take SIGTERM and the
 * end of its input, and tells this thread through a shared flag that a synchronous
 * loop can read (`ctx.signal.aborted`, `ctx.checkpoint()`), while `ctx.report` sends a
 * due update at once instead of waiting for a timer.
 *
 * It also keeps instances between calls, within the budget the server gives
 * (residents.ts): a call the server marks `resident` runs on the instance held, and
 * each answer says what the child let go of and what it now holds.
 *
 * A batch call (a Call with items, to a batched predict) answers each item in its
 * Result: each has its own signal, which CancelItems aborts while the batch runs, and
 * its own progress, sent with its item id.
 * @module
 */
import { create, fromBinary, fromJson, type MessageInitShape, type JsonValue as PbJsonValue, toBinary } from "@bufbuild/protobuf";
import { ValueSchema as JsonSchema } from "@bufbuild/protobuf/wkt";
import {
  type BatchItem,
  type Call,
  CallKind,
  type FailureSchema,
  type ItemOutcomeSchema,
  type ManifestSchema,
  ResidentRefSchema,
  ServerMessageSchema,
  type Value,
  ValueSchema,
  WorkerMessageSchema,
} from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type BatchCallItem, checkPlugin, declared, type ItemAnswer, isBatched, runBatch, runCall, type CallKind as SdkCallKind } from "../_call.ts";
import { type Context, createContext, createLogger, MAX_CHECKPOINT_BYTES } from "../context.ts";
import { PluginError } from "../errors.ts";
import type { ModelType, Plugin } from "../plugin.ts";
import { jsonSchemaText } from "../schema.ts";
import type { Args, JsonValue, Kwargs, PluginValue } from "../values.ts";
import { decodeValue, encodeValue } from "./codec.ts";
import { encodeChunks } from "./encode-chunks.ts";
import { framedChunks } from "./frames.ts";
import { collectSoon, GC_HINT_BYTES } from "./gc-hint.ts";
import { heartbeatThrottle, type Progress, progressThrottle } from "./progress.ts";
import { type Held, residentCall } from "./resident-call.ts";
import { Residents } from "./residents.ts";
import { THREAD_BUSY, THREAD_CANCELLED, THREAD_NOTIFY } from "./thread-start.ts";

/** Main thread → plugin thread. @internal */
export type ToThread =
  | {
      type: "start";
      moduleUrl: string;
      runtime: "node" | "deno";
      pid: number;
      progressIntervalMs: number;
      /** How many bytes of instances (serialized) to keep between calls; 0 keeps none. */
      residentBytes: number;
      /** Shared with the main thread: see THREAD_CANCELLED, THREAD_BUSY, THREAD_NOTIFY. */
      state: Int32Array;
    }
  | { type: "call"; frame: Uint8Array; number: number }
  /** A frame that is not a call (Forget), handled in order with the calls. */
  | { type: "control"; frame: Uint8Array }
  /** A CancelItems frame: handled at once, not after the batch call it is about. */
  | { type: "cancel_items"; frame: Uint8Array }
  /** A CheckpointStored frame: the answer to ctx.checkpoint(value), taken at once. */
  | { type: "checkpoint_stored"; frame: Uint8Array }
  | { type: "cancel" };

/** Plugin thread → main thread. @internal */
export type FromThread =
  /** The call ended, its result or failure frame written: only when the main thread asked (THREAD_NOTIFY). */
  | { type: "done" }
  /** The plugin module did not load (its failure frame is written): exit. */
  | { type: "unusable" };

/** What a runtime adapter provides to the plugin thread. @internal */
export interface ThreadHost {
  post(message: FromThread): void;
  /**
   * Writes bytes to the protocol channel (the real stdout), synchronously and whole:
   * this thread writes every frame of its calls itself, and a frame goes out the moment
   * it is made, even from inside a synchronous loop. The main thread writes none while
   * this thread lives.
   */
  writeSync(bytes: Uint8Array): void;
  onMessage(listener: (message: ToThread) => void): void;
  /** Writes one line to the child's stderr, which the server keeps as the log tail. */
  logLine(line: string): void;
}

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

/** A call's declared schemas as JSON Schema text, when it declared any. */
function signature(call: string, fn: Parameters<typeof declared>[0] | undefined) {
  if (!fn) return [];
  const { args, kwargs, state } = declared(fn);
  const text = {
    argsSchema: jsonSchemaText(args, "args"),
    kwargsSchema: jsonSchemaText(kwargs, "kwargs"),
    stateSchema: jsonSchemaText(state, "state"),
  };
  return text.argsSchema || text.kwargsSchema || text.stateSchema ? [{ call, ...text }] : [];
}

/** How a model type's predicts may be served: a batched one is concurrent too. */
function servingOf(model: ModelType<unknown>) {
  const predict = model.predict;
  if (isBatched(predict)) return { concurrent: true, batchMaxSize: predict.batch.maxSize, batchMaxWaitMs: predict.batch.maxWaitMs };
  return { concurrent: typeof predict === "object" && predict.concurrent === true };
}

/** What the module declares, with the JSON Schemas of its calls, converted here once. */
function manifestOf(plugin: Plugin): MessageInitShape<typeof ManifestSchema> {
  return {
    name: plugin.name,
    description: plugin.description ?? "",
    modelTypes: Object.entries(plugin.models ?? {}).map(([name, m]) => ({
      name,
      description: m.description ?? "",
      signatures: [...signature("instantiate", m.instantiate), ...signature("fit", m.fit), ...signature("predict", m.predict)],
      serving: servingOf(m),
    })),
    dataAccess: Object.entries(plugin.dataAccess ?? {}).map(([name, f]) => ({
      name,
      description: f.description ?? "",
      signatures: signature("data_access", f),
    })),
  };
}

/** An error as a Failure's fields; allocation failures are named so that the server reports out_of_memory. */
function errorFields(error: unknown): MessageInitShape<typeof FailureSchema> {
  if (PluginError.is(error)) {
    const details = error.details === undefined ? {} : { details: fromJson(JsonSchema, JSON.parse(JSON.stringify(error.details)) as PbJsonValue) };
    return { name: error.name, message: error.message, stack: error.stack ?? "", code: error.code, ...details };
  }
  if (error instanceof Error) {
    const outOfMemory = error instanceof RangeError && /allocation failed|out of memory/i.test(error.message);
    // Node's permission model says only "restricted": name what and where, so the server can say which key allows it.
    const denied = error as Error & { code?: unknown; permission?: unknown; resource?: unknown };
    const message =
      denied.code === "ERR_ACCESS_DENIED" && typeof denied.permission === "string"
        ? `${error.message}: ${denied.permission}${typeof denied.resource === "string" ? ` of "${denied.resource}"` : ""}`
        : error.message;
    return { name: outOfMemory ? "OutOfMemoryError" : error.name, message, stack: error.stack ?? "" };
  }
  return { name: "Error", message: String(error), stack: "" };
}

const cancelled = () => new DOMException("the action was cancelled", "AbortError");

/**
 * An AbortSignal that also learns of a cancel from the shared flag, the moment the
 * plugin looks at it: a plugin in a synchronous loop never lets the cancel message in.
 */
function cancellableSignal(state: Int32Array): { controller: AbortController; signal: AbortSignal } {
  const controller = new AbortController();
  const signal = controller.signal;
  const aborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "aborted")!.get!;
  const throwIfAborted = AbortSignal.prototype.throwIfAborted;
  // Once: a runtime's abort() may read `aborted` itself (Deno's does), which must not abort again.
  let aborting = false;
  const sync = () => {
    if (aborting || Atomics.load(state, THREAD_CANCELLED) === 0 || aborted.call(signal)) return;
    aborting = true;
    controller.abort(cancelled());
  };
  Object.defineProperty(signal, "aborted", {
    get: () => {
      sync();
      return aborted.call(signal);
    },
  });
  Object.defineProperty(signal, "throwIfAborted", {
    value: () => {
      sync();
      throwIfAborted.call(signal);
    },
  });
  return { controller, signal };
}

/** A progress report as the pipe carries it. */
const stateValue = (state: JsonValue) => fromJson(JsonSchema, JSON.parse(JSON.stringify(state ?? null)) as PbJsonValue);

/** The call that runs, as a cancel finds it: the whole call's controller, and each batch item's. */
interface Running {
  callId: string;
  controller: AbortController;
  items: Map<string, AbortController>;
  /** The checkpoints sent and not answered yet, by their seq (counted by `sent`). */
  checkpoints: Map<number, { resolve(): void; reject(error: Error): void }>;
  sent: number;
}

/** Serves the plugin thread until the process exits. @internal */
export function runThread(host: ThreadHost): void {
  const send = (message: MessageInitShape<typeof WorkerMessageSchema>) => {
    for (const part of framedChunks(encodeChunks(WorkerMessageSchema, create(WorkerMessageSchema, message)))) host.writeSync(part);
  };
  let start: Extract<ToThread, { type: "start" }> | undefined;
  let residents = new Residents<Held>(0);
  /** The call that ends let go of a resident instance: worth a collection (gc-hint.ts). */
  let droppedAny = false;
  /** What the call that ends changed of the residents, for its answer. */
  const deltas = () => {
    const { dropped, kept } = residents.deltas();
    droppedAny ||= dropped.length > 0;
    return { dropped: dropped.map((r) => create(ResidentRefSchema, r)), kept: kept.map((r) => create(ResidentRefSchema, r)) };
  };
  let plugin: Promise<Plugin | undefined> = Promise.resolve(undefined);
  let current: Running | undefined;
  // Calls run one at a time, in arrival order.
  let chain: Promise<void> = Promise.resolve();

  const load = async (s: NonNullable<typeof start>): Promise<Plugin | undefined> => {
    let loaded: Plugin;
    try {
      loaded = asPlugin(await import(s.moduleUrl), s.moduleUrl);
      checkPlugin(loaded);
    } catch (error) {
      send({ kind: { case: "failure", value: { callId: "", ...errorFields(error) } } });
      host.post({ type: "unusable" });
      return undefined;
    }
    send({
      kind: {
        case: "hello",
        value: { runtime: s.runtime, pid: s.pid, manifest: manifestOf(loaded) },
      },
    });
    return loaded;
  };

  const handle = async (plugin: Plugin, s: NonNullable<typeof start>, call: Call, number: number): Promise<void> => {
    const { controller, signal } = cancellableSignal(s.state);
    const running: Running = { callId: call.callId, controller, items: new Map(), checkpoints: new Map(), sent: 0 };
    current = running;
    const progress = progressThrottle(s.progressIntervalMs, (state) =>
      send({ kind: { case: "progress", value: { callId: call.callId, state: stateValue(state) } } }),
    );
    const heartbeat = heartbeatThrottle(() => send({ kind: { case: "heartbeat", value: { callId: call.callId } } }));
    // What sends while the call runs, closed once it has answered.
    const throttles: Pick<Progress, "close">[] = [progress, heartbeat];
    const first = call.items[0];
    const ctx: Context = createContext(
      {
        callId: call.callId,
        info: {
          // A batch's ctx is its first item's.
          actionId: first ? first.actionId : call.actionId,
          modelId: call.modelId,
          target: call.target,
          call: kinds[call.kind] ?? "predict",
          attempt: call.attempt || 1,
          ...(call.checkpoint ? { checkpoint: decodeValue(call.checkpoint) } : {}),
        },
        signal,
        log: createLogger(host.logLine),
        report: progress.report,
        heartbeat: heartbeat.beat,
      },
      (value) => storeCheckpoint(running, value),
    );
    try {
      const kind = kinds[call.kind];
      if (!kind) throw new TypeError(`unknown call kind ${call.kind}`);
      const resident = residentCall(call, kind, residents);
      const instance = resident.instance ? { instance: resident.instance } : {};
      if (first) {
        if (kind !== "predict") throw new TypeError(`a call with items must be a predict, not ${kind}`);
        const { items, answers } = batchItems(s, running, call.items, throttles);
        answers.push(...(await runBatch(plugin, { target: call.target, items, ...instance }, ctx)));
        for (const throttle of throttles) throttle.close();
        resident.succeeded(undefined);
        send({ kind: { case: "result", value: { callId: call.callId, items: answers.map(itemOutcome), ...deltas() } } });
        return;
      }
      const out = await runCall(plugin, { kind, target: call.target, ...decodeArguments(call.args, call.kwargs), ...instance }, ctx);
      for (const throttle of throttles) throttle.close();
      const result = { callId: call.callId, value: encodeValue(out.value) };
      resident.succeeded(out.instance);
      const answer = out.instance ? { ...result, instance: out.instance } : result;
      send({ kind: { case: "result", value: { ...answer, ...deltas() } } });
    } catch (error) {
      for (const throttle of throttles) throttle.close();
      send({ kind: { case: "failure", value: { callId: call.callId, ...errorFields(error), ...deltas() } } });
    } finally {
      current = undefined;
      // Clear, then look: the main thread asks, then looks (see serve.ts), so one sees the other.
      // Not a later call's number: it came while this one ended, and runs next (and ends idle).
      const idle = Atomics.compareExchange(s.state, THREAD_BUSY, number, 0) === number;
      if (idle && Atomics.load(s.state, THREAD_NOTIFY) !== 0) host.post({ type: "done" });
    }
  };

  /** Sends a checkpoint to the server; resolves once it answers that it stored it. */
  const storeCheckpoint = (running: Running, value: PluginValue): Promise<void> => {
    const encoded = encodeValue(value);
    const size = toBinary(ValueSchema, encoded).byteLength;
    if (size > MAX_CHECKPOINT_BYTES) {
      const why = `ctx.checkpoint: the value is ${size} bytes encoded, over the ${MAX_CHECKPOINT_BYTES} a checkpoint may hold; keep only what the next attempt needs to resume`;
      return Promise.reject(new RangeError(why));
    }
    const seq = ++running.sent;
    return new Promise<void>((resolve, reject) => {
      running.checkpoints.set(seq, { resolve, reject });
      send({ kind: { case: "checkpoint", value: { callId: running.callId, seq, value: encoded } } });
    });
  };

  /**
   * A batch call's items as runBatch takes them, each with its own signal (registered
   * for CancelItems) and progress; one whose arguments do not decode is answered here.
   */
  const batchItems = (s: NonNullable<typeof start>, running: Running, sent: BatchItem[], throttles: Pick<Progress, "close">[]) => {
    const items: BatchCallItem[] = [];
    const answers: ItemAnswer[] = [];
    for (const item of sent) {
      const { controller, signal } = cancellableSignal(s.state);
      running.items.set(item.itemId, controller);
      const progress = progressThrottle(s.progressIntervalMs, (state) =>
        send({ kind: { case: "progress", value: { callId: running.callId, itemId: item.itemId, state: stateValue(state) } } }),
      );
      throttles.push(progress);
      try {
        const log = createLogger(host.logLine, { action_id: item.actionId });
        items.push({ id: item.itemId, actionId: item.actionId, ...decodeArguments(item.args, item.kwargs), signal, report: progress.report, log });
      } catch (error) {
        answers.push({ id: item.itemId, error });
      }
    }
    return { items, answers };
  };

  /** An item's answer as the Result carries it; a value that does not encode fails its item alone. */
  const itemOutcome = (answer: ItemAnswer): MessageInitShape<typeof ItemOutcomeSchema> => {
    if (!("error" in answer)) {
      try {
        return { itemId: answer.id, outcome: { case: "value", value: encodeValue(answer.value) } };
      } catch (error) {
        return { itemId: answer.id, outcome: { case: "failure", value: errorFields(error) } };
      }
    }
    return { itemId: answer.id, outcome: { case: "failure", value: errorFields(answer.error) } };
  };

  /** A call's or an item's arguments as the plugin gets them. */
  const decodeArguments = (args: Value[], kwargs: { [key: string]: Value }): { args: Args; kwargs: Kwargs } => ({
    kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, decodeArgument(v, `kwargs.${k}`)])),
    args: args.map((v, i) => decodeArgument(v, `args[${i}]`)),
  });

  /** An argument as the plugin gets it; JSON the server did not parse (too large to) may not be JSON. */
  const decodeArgument = (value: Parameters<typeof decodeValue>[0], path: string) => {
    try {
      return decodeValue(value);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw new PluginError("invalid_argument", `argument ${path}: json_text is not valid JSON (${error.message})`);
    }
  };

  host.onMessage((message) => {
    switch (message.type) {
      case "start":
        start = message;
        residents = new Residents<Held>(message.residentBytes);
        plugin = load(message);
        return;
      case "call": {
        const s = start!;
        chain = chain.then(async () => {
          const loaded = await plugin;
          const decoded = fromBinary(ServerMessageSchema, message.frame);
          droppedAny = false;
          if (loaded && decoded.kind.case === "call") await handle(loaded, s, decoded.kind.value, message.number);
          // A large frame (an instance's bytes) or an instance let go of is garbage now.
          if (message.frame.byteLength >= GC_HINT_BYTES || droppedAny) collectSoon();
        });
        return;
      }
      case "control":
        // In order with the calls: the server sends Forget between calls, and it may come
        // before the thread has finished the last one.
        chain = chain.then(() => {
          const decoded = fromBinary(ServerMessageSchema, message.frame);
          if (decoded.kind.case === "forget" && residents.forget(decoded.kind.value.refs) > 0) collectSoon();
        });
        return;
      case "cancel_items": {
        // Not through the chain: the batch it is about holds it.
        const decoded = fromBinary(ServerMessageSchema, message.frame);
        if (decoded.kind.case !== "cancelItems" || decoded.kind.value.callId !== current?.callId) return;
        for (const id of decoded.kind.value.itemIds) current.items.get(id)?.abort(cancelled());
        return;
      }
      case "checkpoint_stored": {
        const decoded = fromBinary(ServerMessageSchema, message.frame);
        if (decoded.kind.case !== "checkpointStored" || decoded.kind.value.callId !== current?.callId) return;
        const { seq, error } = decoded.kind.value;
        const waiting = current.checkpoints.get(seq);
        current.checkpoints.delete(seq);
        if (error) waiting?.reject(new Error(`ctx.checkpoint: ${error}`));
        else waiting?.resolve();
        return;
      }
      case "cancel":
        if (!current) return;
        current.controller.abort(cancelled());
        for (const item of current.items.values()) item.abort(cancelled());
        // The server answers no checkpoint of a call it stops: a plugin awaiting one sees the cancel.
        for (const waiting of current.checkpoints.values()) waiting.reject(cancelled());
        current.checkpoints.clear();
        return;
    }
  });
}
