import { create, createFileRegistry, type DescMessage, fromBinary, fromJson, toBinary } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ActionSchema, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { DType } from "../gen/plinth/v1/arg_pb.ts";
import { CallSchemaSchema, PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { ServerMessageSchema } from "../gen/plinth/worker/v1/worker_pb.ts";
import { encodeBinary, encodeChunks, joinChunks } from "../sdk/worker/encode-chunks.ts";
import { FrameDecoder, framedChunks, ownsBuffer } from "../sdk/worker/frames.ts";

/** Byte-for-byte equal (expect's deep equality walks a MB array element by element). */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

const big = new Uint8Array(1 << 20).map((_, i) => i % 251);
const text = JSON.stringify(Array.from({ length: 5000 }, (_, i) => i / 7));

describe("encoding without a copy per nesting level", () => {
  it("gives the bytes protobuf-es gives, for small and large fields, maps, packed lists and Value trees", () => {
    const request = create(PredictRequestSchema, {
      modelId: "m-1",
      args: [
        { kind: { case: "tensor", value: { dtype: DType.FLOAT32, shape: [512, 512], data: big } } },
        { kind: { case: "jsonText", value: text } },
        { kind: { case: "json", value: fromJson(ValueSchema, { a: [1, "two", null, true, { b: 3.5 }] }) } },
        { kind: { case: "bytes", value: new Uint8Array([1, 2, 3]) } },
      ],
      kwargs: { small: { kind: { case: "jsonText", value: "[1]" } }, large: { kind: { case: "bytes", value: big.subarray(7, 100_007) } } },
      wait: true,
    });
    expect(same(encodeBinary(PredictRequestSchema, request), toBinary(PredictRequestSchema, request))).toBe(true);
    const response = create(PredictResponseSchema, {
      action: {
        id: "a-1",
        status: ActionStatus.SUCCEEDED,
        result: { prediction: { kind: { case: "tensor", value: { dtype: DType.UINT8, shape: [1 << 20], data: big } } } },
        state: fromJson(ValueSchema, { progress: 1 }),
        logTail: ["one", "two"],
      },
    });
    expect(same(encodeBinary(PredictResponseSchema, response), toBinary(PredictResponseSchema, response))).toBe(true);
    const small = create(ActionSchema, { id: "a-2", modelId: "m-2", logTail: ["x"] });
    expect(same(encodeBinary(ActionSchema, small), toBinary(ActionSchema, small))).toBe(true);
  });

  it("gives protobuf-es's bytes for actions with every kind of field: nested messages, repeated ones, maps of messages, enums, int64, doubles, oneofs, unknown fields", () => {
    const now = { seconds: 1_790_000_000n, nanos: 123_456_789 };
    const action = create(ActionSchema, {
      id: "a-3",
      modelId: "m-3",
      modelType: "t.Model",
      status: ActionStatus.FAILED,
      kwargs: { x: { kind: { case: "json", value: fromJson(ValueSchema, { deep: { list: [1, 2.5, -3, "s", false, null] } }) } }, y: {} },
      error: { code: "plugin_error", message: "boom", stack: "at x", details: fromJson(ValueSchema, { why: "because" }) },
      createTime: now,
      endTime: { seconds: 0n, nanos: 1 },
      timeout: { seconds: 30n },
      retry: { maxAttempts: 3, initialInterval: { seconds: 1n }, backoffCoefficient: 2.5, nonRetryableErrorCodes: ["a", "b"] },
      attempts: [
        { attempt: 1, error: { code: "stalled" }, startTime: now, server: "s-1" },
        { attempt: 2, error: { code: "" } },
      ],
      dataAccess: [{ argument: "0", name: "iris.inputs", status: ActionStatus.SUCCEEDED, state: fromJson(ValueSchema, [1]) }],
      cancel: { by: "CancelAction", forced: true, childKept: false, stopDuration: { nanos: 5 } },
      modelRevision: 18_446_744_073_709_551_615n,
      priority: 1,
      logTail: [],
    });
    expect(same(encodeBinary(ActionSchema, action), toBinary(ActionSchema, action))).toBe(true);
    // Fields this version does not know, kept from the bytes they came in.
    const withUnknown = fromBinary(ActionSchema, new Uint8Array([...toBinary(ActionSchema, action), 0xf8, 0x3e, 0x07]));
    expect(same(encodeBinary(ActionSchema, withUnknown), toBinary(ActionSchema, withUnknown))).toBe(true);
    const empty = create(ActionSchema);
    expect(encodeBinary(ActionSchema, empty).byteLength).toBe(0);
    // google.protobuf.Struct in a field is held as a JSON object (a plugin's schemas in its hello).
    const schema = create(CallSchemaSchema, {
      call: "instantiate",
      kwargs: { type: "object", properties: { depth: { type: "integer", minimum: 1, default: 3 } }, required: ["depth"] },
      state: {},
    });
    expect(same(encodeBinary(CallSchemaSchema, schema), toBinary(CallSchemaSchema, schema))).toBe(true);
  });

  it("gives protobuf-es's bytes for every scalar type at its edges, packed and not, strings around the one-byte length, and lengths of one to three bytes around large chunks", () => {
    const T = FieldDescriptorProto_Type;
    const scalars = {
      double: T.DOUBLE,
      float: T.FLOAT,
      int64: T.INT64,
      uint64: T.UINT64,
      int32: T.INT32,
      fixed64: T.FIXED64,
      fixed32: T.FIXED32,
      bool: T.BOOL,
      string: T.STRING,
      bytes: T.BYTES,
      uint32: T.UINT32,
      sfixed32: T.SFIXED32,
      sfixed64: T.SFIXED64,
      sint32: T.SINT32,
      sint64: T.SINT64,
    };
    const fields = Object.entries(scalars).flatMap(([name, type], i) => [
      { name, number: i + 1, type, label: FieldDescriptorProto_Label.OPTIONAL },
      { name: `${name}_list`, number: i + 101, type, label: FieldDescriptorProto_Label.REPEATED },
    ]);
    fields.push({ name: "child", number: 200, type: T.MESSAGE, label: FieldDescriptorProto_Label.OPTIONAL, typeName: ".t.All" } as never);
    fields.push({ name: "children", number: 201, type: T.MESSAGE, label: FieldDescriptorProto_Label.REPEATED, typeName: ".t.All" } as never);
    const file = create(FileDescriptorProtoSchema, {
      name: "t.proto",
      package: "t",
      syntax: "proto3",
      messageType: [{ name: "All", field: fields }],
    });
    const All = createFileRegistry(file, () => undefined).getMessage("t.All") as DescMessage;
    const edges = {
      double: [0.1, -1e308, Number.MIN_VALUE, Number.NaN, -0],
      float: [1.5, -3.25, 1e30],
      int64: [1n, -1n, 9_223_372_036_854_775_807n, -9_223_372_036_854_775_808n],
      uint64: [1n, 127n, 128n, 18_446_744_073_709_551_615n],
      int32: [1, -1, 2_147_483_647, -2_147_483_648, 300],
      fixed64: [1n, 18_446_744_073_709_551_615n],
      fixed32: [1, 4_294_967_295],
      bool: [true, false],
      string: ["x", "é".repeat(42), "€".repeat(42), "€".repeat(43), "a".repeat(300), "😀 and \ud800 alone"],
      bytes: [new Uint8Array([0, 255]), big.subarray(0, 127), big.subarray(0, 3000)],
      uint32: [1, 4_294_967_295],
      sfixed32: [-1, 2_147_483_647],
      sfixed64: [-1n, -9_223_372_036_854_775_808n],
      sint32: [-1, 1, -2_147_483_648, 2_147_483_647],
      sint64: [-1n, 1n, -9_223_372_036_854_775_808n, 9_223_372_036_854_775_807n],
    };
    const message = (depth: number, fill: number): Record<string, unknown> => {
      const m: Record<string, unknown> = {};
      for (const [name, values] of Object.entries(edges)) {
        m[name] = values[depth % values.length];
        m[`${name}List`] = values;
      }
      // Children whose lengths take one, two and three bytes, with large chunks inside them.
      if (depth < 2) {
        m.child = message(depth + 1, fill * 100);
        m.children = [{ bytes: big.subarray(0, fill) }, { string: "s".repeat(fill) }, { children: [{ bytes: big.subarray(0, 20_000) }] }, {}];
      }
      return m;
    };
    for (const fill of [1, 120, 130, 16_300, 16_400]) {
      const value = create(All, message(0, fill) as never);
      expect(same(encodeBinary(All, value), toBinary(All, value)), `fill ${fill}`).toBe(true);
    }
  });

  it("keeps a large bytes field by reference and frames it without joining it", () => {
    const message = create(ServerMessageSchema, {
      kind: {
        case: "call",
        value: { callId: "c-1", args: [{ kind: { case: "tensor", value: { dtype: DType.UINT8, shape: [big.length], data: big } } }] },
      },
    });
    const chunks = encodeChunks(ServerMessageSchema, message);
    expect(chunks).toContain(big);
    const parts = framedChunks(chunks);
    expect(parts).toContain(big);
    const [frame] = new FrameDecoder(1 << 30).push(joinChunks(parts));
    expect(same(frame!, toBinary(ServerMessageSchema, message))).toBe(true);
  });
});

describe("FrameDecoder", () => {
  it("gives back every frame whole however the stream is cut, and a frame that came in several chunks in a buffer of its own", () => {
    const payloads = [new Uint8Array(0), new Uint8Array([7]), big.subarray(0, 70_000), new Uint8Array([1, 2, 3]), big.subarray(5, 300_005)];
    const stream = joinChunks(payloads.flatMap((p) => framedChunks([p])));
    for (const cut of [1, 2, 3, 5, 4096, 65_536, stream.byteLength]) {
      const decoder = new FrameDecoder(1 << 20);
      const frames: Uint8Array[] = [];
      for (let at = 0; at < stream.byteLength; at += cut) frames.push(...decoder.push(stream.subarray(at, at + cut)));
      expect(frames.length, `cut ${cut}`).toBe(payloads.length);
      for (const [i, frame] of frames.entries()) expect(same(frame, payloads[i]!), `cut ${cut}, frame ${i}`).toBe(true);
      expect(decoder.pending).toBe(0);
      // The 300 kB frame never fits one chunk of 64 kB: it owns its buffer, which may be handed over whole.
      if (cut === 65_536) expect(ownsBuffer(frames[4]!)).toBe(true);
      if (cut === stream.byteLength) expect(ownsBuffer(frames[4]!)).toBe(false);
    }
  });
});
