/**
 * Plain JavaScript values to Plinth arguments and back: JSON values, Uint8Array bytes,
 * Tensors and data-access references in; the same out, with summaries of values the
 * server showed only in part.
 */
import { create, fromJson, isMessage, type JsonValue as PbJsonValue, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Arg, ArgKind, ArgSchema, type ArgSummary, TensorSchema } from "../gen/plinth/v1/arg_pb.ts";
import { type JsonValue, Tensor } from "../sdk/mod.ts";
import { dtypeName, dtypeValue, holds } from "../sdk/worker/codec.ts";

/** A reference to a data-access function whose result becomes the argument. */
export class DataAccessRef {
  readonly name: string;
  readonly args: readonly ArgValue[];
  readonly kwargs: Readonly<Record<string, ArgValue>>;
  constructor(name: string, args: readonly ArgValue[] = [], kwargs: Readonly<Record<string, ArgValue>> = {}) {
    this.name = name;
    this.args = args;
    this.kwargs = kwargs;
  }
}

/**
 * An argument that the engine resolves by calling a data-access function first.
 *
 * @example
 * ```ts
 * await client.fit(modelId, { args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")] }).done;
 * ```
 */
export function dataAccess(name: string, args: readonly ArgValue[] = [], kwargs: Readonly<Record<string, ArgValue>> = {}): DataAccessRef {
  return new DataAccessRef(name, args, kwargs);
}

/** A value the server showed in part (larger than engine.inline_payload_bytes): its kind, size and start. */
export interface Summary {
  readonly summary: true;
  readonly kind: "json" | "json_text" | "bytes" | "tensor" | "list" | "map" | "unknown";
  readonly sizeBytes: number;
  /** JSON: the start of its text; lists and maps: of their JSON items. */
  readonly prefix: string;
  /** Lists and maps: how many items or entries. */
  readonly items?: number;
  /** Tensors: element type and shape. */
  readonly dtype?: string;
  readonly shape?: readonly number[];
}

/**
 * A plain value, or an Arg message as it is (from proto3 JSON, say). An array or object
 * holding bytes or tensors goes as a list or map argument; the plugin gets it back as an
 * array or object.
 */
export type ArgValue = JsonValue | Uint8Array | Tensor | DataAccessRef | Arg | ArgValue[] | { [key: string]: ArgValue };
export type ResultValue = JsonValue | Uint8Array | Tensor | Summary | ResultValue[] | { [key: string]: ResultValue };

/** What cannot travel as JSON: it makes an array or object holding it a list or map. */
const special = (v: object) => v instanceof Uint8Array || v instanceof Tensor || v instanceof DataAccessRef || isMessage(v, ArgSchema);

/** JSON above this size travels as json_text: one string, not a message per element. */
const TEXT_ABOVE_BYTES = 1024;

export function toArg(value: ArgValue, path = "argument"): Arg {
  if (isMessage(value, ArgSchema)) return value;
  if (value instanceof Uint8Array) return create(ArgSchema, { kind: { case: "bytes", value } });
  if (value instanceof Tensor) {
    const tensor = create(TensorSchema, { dtype: dtypeValue(value.dtype), shape: [...value.shape], data: value.toBytes() });
    return create(ArgSchema, { kind: { case: "tensor", value: tensor } });
  }
  if (value instanceof DataAccessRef) {
    return create(ArgSchema, {
      kind: {
        case: "dataAccess",
        value: {
          name: value.name,
          args: value.args.map((a, i) => toArg(a, `${path}.args[${i}]`)),
          kwargs: Object.fromEntries(Object.entries(value.kwargs).map(([k, v]) => [k, toArg(v, `${path}.kwargs.${k}`)])),
        },
      },
    });
  }
  if (holds(value, special)) {
    if (Array.isArray(value)) {
      return create(ArgSchema, { kind: { case: "list", value: { items: value.map((item, i) => toArg(item, `${path}[${i}]`)) } } });
    }
    const entries: Record<string, Arg> = {};
    for (const [key, item] of Object.entries(value as Record<string, ArgValue>)) entries[key] = toArg(item, `${path}.${key}`);
    return create(ArgSchema, { kind: { case: "map", value: { entries } } });
  }
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${path}: ${typeof value} is not a JSON value, bytes, a Tensor or a data-access reference`);
  if (text.length > TEXT_ABOVE_BYTES) return create(ArgSchema, { kind: { case: "jsonText", value: text } });
  return create(ArgSchema, { kind: { case: "json", value: fromJson(ValueSchema, value as PbJsonValue) } });
}

const summaryKinds: Record<number, Summary["kind"]> = {
  [ArgKind.JSON]: "json",
  [ArgKind.JSON_TEXT]: "json_text",
  [ArgKind.BYTES]: "bytes",
  [ArgKind.TENSOR]: "tensor",
  [ArgKind.LIST]: "list",
  [ArgKind.MAP]: "map",
};

function summary(s: ArgSummary): Summary {
  return {
    summary: true,
    kind: summaryKinds[s.kind] ?? "unknown",
    sizeBytes: Number(s.sizeBytes),
    prefix: s.prefix,
    ...(s.kind === ArgKind.TENSOR ? { dtype: dtypeName(s.dtype), shape: [...s.shape] } : {}),
    ...(s.kind === ArgKind.LIST || s.kind === ArgKind.MAP ? { items: s.items } : {}),
  };
}

/** An argument or result as a plain value. */
export function fromArg(arg: Arg | undefined): ResultValue | undefined {
  const kind = arg?.kind;
  switch (kind?.case) {
    case "json":
      return toJson(ValueSchema, kind.value) as JsonValue;
    case "jsonText":
      return JSON.parse(kind.value) as JsonValue;
    case "bytes":
      // A plain Uint8Array (grpc-js hands out Buffers): the same bytes, not a copy.
      return new Uint8Array(kind.value.buffer, kind.value.byteOffset, kind.value.byteLength);
    case "tensor":
      return Tensor.fromBytes(dtypeName(kind.value.dtype), kind.value.shape, kind.value.data);
    case "summary":
      return summary(kind.value);
    case "list":
      return kind.value.items.map((item) => fromArg(item) ?? null);
    case "map": {
      const out: Record<string, ResultValue> = {};
      for (const [key, item] of Object.entries(kind.value.entries)) out[key] = fromArg(item) ?? null;
      return out;
    }
    default:
      return undefined;
  }
}
