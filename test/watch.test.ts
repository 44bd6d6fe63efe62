import { once } from "node:events";
import * as http2 from "node:http2";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ArgKind, DType } from "../gen/plinth/v1/arg_pb.ts";
import {
  ChangeKind,
  type WatchStateRequest,
  WatchStateRequestSchema,
  type WatchStateResponse,
  WatchStateResponseSchema,
} from "../gen/plinth/v1/state_service_pb.ts";
import { jsonOf, stateOf } from "./helpers/args.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** What a client knows after applying a stream's messages: models and actions by id. */
class View {
  models = new Map<string, bigint>();
  actions = new Map<string, { status: ActionStatus; state: unknown }>();
  revision = 0n;
  messages: WatchStateResponse[] = [];

  apply(message: WatchStateResponse): void {
    this.messages.push(message);
    this.revision = message.revision;
    const event = message.event;
    switch (event.case) {
      case "snapshot":
        this.models = new Map(event.value.models.map((m) => [m.id, m.revision]));
        this.actions = new Map(event.value.actions.map((a) => [a.id, { status: a.status, state: stateOf(a.state) }]));
        return;
      case "modelUpserted":
        this.models.set(event.value.id, event.value.revision);
        return;
      case "modelDeleted":
        this.models.delete(event.value);
        return;
      case "actionUpserted":
        this.actions.set(event.value.id, { status: event.value.status, state: stateOf(event.value.state) });
        return;
    }
  }

  summary() {
    return { models: Object.fromEntries(this.models), actions: Object.fromEntries(this.actions) };
  }
}

/** Follows WatchState until `until` holds; returns the view and whether to keep it open. */
async function watch(request: MessageInitShape<typeof WatchStateRequestSchema>, until: (view: View) => boolean, view = new View()): Promise<View> {
  const controller = new AbortController();
  try {
    for await (const message of t!.state.watchState(request, { signal: controller.signal })) {
      view.apply(message);
      if (until(view)) break;
    }
  } finally {
    controller.abort();
  }
  return view;
}

const ended = (status: ActionStatus | undefined) => status === ActionStatus.SUCCEEDED || status === ActionStatus.FAILED;

async function systest(config: Record<string, unknown> = {}) {
  t = await startTestServer({ plugins: [{ module: "plugins/system-test/mod.ts" }], ...config });
  return t;
}

describe("WatchState", () => {
  it("filters by model, by action and by kind of change", async () => {
    const t = await systest();
    const a = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const b = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const start = (await t.state.getState({})).state!.revision;
    const fitA = (await t.engine.fit({ modelId: a, wait: true })).action!;
    const fitB = (await t.engine.fit({ modelId: b, wait: true })).action!;
    const byModel = await watch({ fromRevision: start, modelIds: [a] }, (v) => ended(v.actions.get(fitA.id)?.status) && v.models.get(a) === 2n);
    expect([...byModel.actions.keys()]).toEqual([fitA.id]);
    expect([...byModel.models.keys()]).toEqual([a]);
    const byAction = await watch({ fromRevision: start, actionIds: [fitB.id] }, (v) => ended(v.actions.get(fitB.id)?.status));
    expect(byAction.messages.every((m) => m.event.case === "actionUpserted" && m.event.value.id === fitB.id)).toBe(true);
    const byKind = await watch({ fromRevision: start, kinds: [ChangeKind.MODEL_UPSERTED] }, (v) => v.models.size === 2);
    expect(byKind.messages.every((m) => m.event.case === "modelUpserted")).toBe(true);
    // The snapshot is filtered the same way.
    const snapshot = await watch({ modelIds: [b] }, () => true);
    expect(snapshot.messages[0]!.event.case === "snapshot" && snapshot.messages[0]!.event.value.models.map((m) => m.id)).toEqual([b]);
  });

  it("shows bytes and tensors above inline_payload_bytes as summaries, small ones as sent", async () => {
    const t = await systest();
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const data = new Uint8Array(64 * 1024).fill(1);
    const small = new Uint8Array([1, 2, 3]);
    const { action } = await t.engine.predict({
      modelId,
      args: [
        { kind: { case: "tensor", value: { dtype: DType.UINT8, shape: [64, 1024], data } } },
        { kind: { case: "bytes", value: data } },
        { kind: { case: "bytes", value: small } },
      ],
    });
    const seen = await watch({ actionIds: [action!.id] }, (v) => ended(v.actions.get(action!.id)?.status));
    const shown = seen.messages.flatMap((m) =>
      m.event.case === "actionUpserted" ? [m.event.value] : m.event.case === "snapshot" ? m.event.value.actions : [],
    );
    const last = shown.filter((a) => a.id === action!.id).at(-1)!;
    // The plugin got the data; the stream shows what it is, not the data itself.
    expect(last.status).toBe(ActionStatus.SUCCEEDED);
    const [tensor, bytes, inline] = last.args;
    expect(tensor!.kind.case === "summary" && tensor!.kind.value).toMatchObject({
      kind: ArgKind.TENSOR,
      sizeBytes: 65536n,
      dtype: DType.UINT8,
      shape: [64, 1024],
    });
    expect(bytes!.kind.case === "summary" && bytes!.kind.value).toMatchObject({ kind: ArgKind.BYTES, sizeBytes: 65536n });
    expect(inline!.kind.case === "bytes" && [...inline!.kind.value]).toEqual([...small]);
    expect(jsonOf(last.result!.prediction)).toMatchObject({
      args: [{ tensor: { dtype: "uint8", shape: [64, 1024] } }, { bytes: 65536 }, { bytes: 3 }],
    });
  });

  // Slow by nature, 4,000 real updates: a few seconds on a busy 2-core machine, tens on a very busy one.
  it("a watcher that stops reading costs at most one pending change per model and action", async () => {
    // The memory store: what is measured is the watcher's queue, not the database's writes.
    const t = await systest({ backend: { kind: "memory" } });
    const models: string[] = [];
    for (let i = 0; i < 4; i++) models.push((await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId);
    // A raw client that reads the first message, then never again.
    const client = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const stream = client.makeServerStreamRequest(
      "/plinth.v1.StateService/WatchState",
      (r: WatchStateRequest) => Buffer.from(toBinary(WatchStateRequestSchema, r)),
      (b: Buffer) => fromBinary(WatchStateResponseSchema, b),
      create(WatchStateRequestSchema, {}),
    );
    const closed = new Promise<void>((resolve) => stream.on("error", () => resolve()));
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));
    stream.pause();
    // 4,000 changes on four models: some 4 MB, many times what flow control lets through.
    const instance = new TextEncoder().encode(JSON.stringify({ args: "x".repeat(1000), fits: [] }));
    for (let i = 0; i < 1000; i++) {
      await Promise.all(models.map((modelId) => t.engine.updateInstance({ modelId, instance })));
    }
    const stats = t.server.engine.stats;
    expect(stats.watchers).toBe(1);
    expect(stats.pending).toBeLessThanOrEqual(models.length);
    expect(stats.pendingBytes).toBeLessThan(models.length * 1024);
    // Reading again, it converges on the latest revision of each model, from far fewer
    // messages than the 4,000 changes: what HTTP/2 flow control let through, then the latest.
    const latest = new Map<string, bigint>();
    let received = 0;
    stream.on("data", (m: WatchStateResponse) => {
      received++;
      if (m.event.case === "modelUpserted") latest.set(m.event.value.id, m.event.value.revision);
      if ([...latest.values()].filter((r) => r === 1001n).length === models.length) stream.cancel();
    });
    stream.resume();
    await closed;
    expect([...latest.values()]).toEqual(models.map(() => 1001n));
    expect(received).toBeLessThan(2000);
    client.close();
  }, 300_000);

  it("many streams on one HTTP/2 connection each get every model's versions in order, and one that stopped reading gets the latest, not a backlog", async () => {
    const t = await systest({ backend: { kind: "memory" } });
    const models: string[] = [];
    for (let i = 0; i < 4; i++) models.push((await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId);
    // One connection, a raw HTTP/2 client: a stream window of 1 KiB, so a stream that is not
    // read holds what its buffer took and at most 1 KiB on the way; the rest waits on the server.
    const session = http2.connect(`http://127.0.0.1:${t.port}`, { settings: { initialWindowSize: 1024 } });
    const request = toBinary(WatchStateRequestSchema, create(WatchStateRequestSchema, { kinds: [ChangeKind.MODEL_UPSERTED] }));
    const frame = Buffer.alloc(5 + request.byteLength);
    frame.writeUInt32BE(request.byteLength, 1);
    frame.set(request, 5);
    const streams = Array.from({ length: 8 }, () => {
      const stream = session.request({
        ":method": "POST",
        ":path": "/plinth.v1.StateService/WatchState",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.end(frame);
      // Each model's versions, and every change with the stream's byte count at its message's end.
      const watcher = {
        stream,
        versions: new Map<string, bigint[]>(),
        arrivals: [] as { revision: bigint; end: number }[],
        bytes: 0,
        snapshot: false,
        onMessage: () => {},
      };
      let buffered = Buffer.alloc(0);
      stream.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        watcher.bytes += chunk.length;
        while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
          const message = fromBinary(WatchStateResponseSchema, buffered.subarray(5, 5 + buffered.readUInt32BE(1)));
          buffered = buffered.subarray(5 + buffered.readUInt32BE(1));
          if (message.event.case === "snapshot") watcher.snapshot = true;
          if (message.event.case === "modelUpserted") {
            const { id, revision } = message.event.value;
            watcher.versions.set(id, [...(watcher.versions.get(id) ?? []), revision]);
            watcher.arrivals.push({ revision, end: watcher.bytes - buffered.length });
          }
          watcher.onMessage();
        }
      });
      return watcher;
    });
    const until = (watcher: (typeof streams)[number], done: () => boolean) =>
      new Promise<void>((resolve) => {
        watcher.onMessage = () => done() && resolve();
        watcher.onMessage();
      });
    await Promise.all(streams.map((w) => until(w, () => w.snapshot)));
    const [slow, ...reading] = streams;
    slow!.stream.pause();
    // 800 changes: far more than the slow stream's buffer and window take.
    const instance = new TextEncoder().encode(JSON.stringify({ args: "x", fits: [] }));
    for (let i = 0; i < 200; i++) await Promise.all(models.map((modelId) => t.engine.updateInstance({ modelId, instance })));
    const final = 201n;
    const latest = (w: (typeof streams)[number]) => models.every((id) => w.versions.get(id)?.at(-1) === final);
    await Promise.all(reading.map((w) => until(w, () => latest(w))));
    for (const w of reading) {
      for (const id of models) {
        const versions = w.versions.get(id)!;
        expect(versions).toEqual([...versions].sort((a, b) => Number(a - b)));
        expect(new Set(versions).size).toBe(versions.length);
      }
    }
    // Read again, the slow stream gets what its buffer and its window held, then the latest of
    // each model: at most the one change the server was writing and one waiting behind it
    // are outdated (grpc-js used to queue 16 more, old versions behind each other).
    const held = slow!.bytes + slow!.stream.readableLength + 1024;
    slow!.stream.resume();
    await until(slow!, () => latest(slow!));
    const outdated = slow!.arrivals.filter(({ revision, end }) => end > held && revision !== final);
    expect(outdated.length).toBeLessThanOrEqual(2);
    for (const w of streams) w.stream.close();
    session.close();
    await once(session, "close");
  }, 120_000);

  it("leaves no listener behind after many connects and disconnects", async () => {
    const t = await systest();
    const baseline = t.server.engine.stats.subscribers;
    for (let i = 0; i < 100; i++) {
      await watch({}, () => true);
      const { action } = await t.engine.createInstance({ modelType: "systest.Model" });
      await watch({ actionIds: [action!.id] }, () => true);
      // WatchAction too: one message, then the client goes away.
      const controller = new AbortController();
      for await (const _ of t.actions.watchAction({ actionId: action!.id }, { signal: controller.signal })) break;
      controller.abort();
    }
    // Each stream's cleanup runs once the server sees the client's cancel: let it.
    const quiet = async () => {
      while (t.server.engine.stats.watchers > 0 || t.server.engine.stats.subscribers > baseline) await new Promise((r) => setImmediate(r));
    };
    await quiet();
    expect(t.server.engine.stats.subscribers).toBe(baseline);
    expect(t.server.engine.stats.watchers).toBe(0);
    // Nor on the server-lifetime signal that ends every stream at shutdown.
    expect(t.server.engine.stats.stopListeners).toBe(0);
  });
});
