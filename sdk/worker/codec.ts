/**
 * Converts between the pipe protocol's Value and the values plugin functions see.
 * @module
 */
import { create, toJson } from "@bufbuild/protobuf";
import { ValueSchema as JsonSchema } from "@bufbuild/protobuf/wkt";
import { DType as PbDType, TensorSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type DType, type JsonValue, type PluginValue, Tensor } from "../values.ts";

const dtypes: Record<DType, PbDType> = {
  float32: PbDType.FLOAT32,
  float64: PbDType.FLOAT64,
  int8: PbDType.INT8,
  int16: PbDType.INT16,
  int32: PbDType.INT32,
  int64: PbDType.INT64,
  uint8: PbDType.UINT8,
  uint16: PbDType.UINT16,
  uint32: PbDType.UINT32,
  uint64: PbDType.UINT64,
  bool: PbDType.BOOL,
};
const dtypeNames = new Map(Object.entries(dtypes).map(([name, pb]) => [pb, name as DType]));

/** @internal */
export function dtypeName(dtype: PbDType): DType {
  const name = dtypeNames.get(dtype);
  if (!name) throw new TypeError(`unsupported tensor dtype ${dtype}`);
  return name;
}

/** @internal */
export function dtypeValue(name: DType): PbDType {
  return dtypes[name];
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** @internal */
export function decodeValue(value: Value | undefined): PluginValue {
  switch (value?.kind.case) {
    case "jsonUtf8":
      return JSON.parse(text.decode(value.kind.value)) as JsonValue;
    case "jsonText":
      return JSON.parse(value.kind.value) as JsonValue;
    case "json":
      return toJson(JsonSchema, value.kind.value) as JsonValue;
    case "bytes":
      return value.kind.value;
    case "tensor": {
      const t = value.kind.value;
      return Tensor.fromBytes(dtypeName(t.dtype), t.shape, t.data);
    }
    case "list":
      return value.kind.value.items.map(decodeValue) as PluginValue;
    case "map": {
      const out: Record<string, PluginValue> = {};
      for (const [key, entry] of Object.entries(value.kind.value.entries)) out[key] = decodeValue(entry);
      return out as PluginValue;
    }
    default:
      return null;
  }
}

/** A plain object: `{}` or Object.create(null), not a class instance (those go by their toJSON). @internal */
export function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Whether `value`, or an array or plain object at any depth in it, passes `test`: then
 * it goes as a list or map, its JSON parts as JSON. Only objects are looked into, so a
 * large array of numbers costs one type check per element. @internal
 */
export function holds(value: unknown, test: (v: object) => boolean): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (test(value)) return true;
  if (Array.isArray(value)) {
    for (const item of value) if (typeof item === "object" && item !== null && holds(item, test)) return true;
    return false;
  }
  if (!isPlainObject(value)) return false;
  for (const key in value) {
    const item = value[key];
    if (typeof item === "object" && item !== null && holds(item, test)) return true;
  }
  return false;
}

const binary = (v: object) => v instanceof Uint8Array || v instanceof Tensor;

/** @internal */
export function encodeValue(value: PluginValue | undefined): Value {
  if (value instanceof Uint8Array) return create(ValueSchema, { kind: { case: "bytes", value } });
  if (value instanceof Tensor) {
    const tensor = create(TensorSchema, { dtype: dtypeValue(value.dtype), shape: [...value.shape], data: value.toBytes() });
    return create(ValueSchema, { kind: { case: "tensor", value: tensor } });
  }
  if (holds(value, binary)) {
    if (Array.isArray(value)) {
      return create(ValueSchema, { kind: { case: "list", value: { items: value.map((item) => encodeValue(item as PluginValue)) } } });
    }
    const entries: Record<string, Value> = {};
    for (const [key, item] of Object.entries(value as Record<string, PluginValue | undefined>))
      if (item !== undefined) entries[key] = encodeValue(item as PluginValue);
    return create(ValueSchema, { kind: { case: "map", value: { entries } } });
  }
  // As UTF-8 text, whatever its size: JSON.stringify semantics (undefined and NaN become
  // null, toJSON() is honoured), no message tree on either side of the pipe, and bytes
  // the server forwards without decoding them.
  return create(ValueSchema, { kind: { case: "jsonUtf8", value: utf8.encode(JSON.stringify(value) ?? "null") } });
}
