/** Building arguments and reading results in tests. */
import { create, fromJson, type JsonValue, type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { ArgSchema as ArgMessage, DType } from "../../gen/plinth/v1/arg_pb.ts";
import { Tensor, type DType as TensorDType } from "../../sdk/mod.ts";

export type ArgInit = MessageInitShape<typeof ArgSchema>;

export const json = (value: JsonValue): ArgInit => ({ kind: { case: "json", value: fromJson(ValueSchema, value) } });

/** JSON as text: the form that crosses the server without conversion. */
export const jsonText = (value: JsonValue): ArgInit => ({ kind: { case: "jsonText", value: JSON.stringify(value) } });

/** n numbers with five decimals: 5,000 are 53 kB of JSON text, 55 kB as a google.protobuf.Value. */
export const numbers = (n: number): number[] => Array.from({ length: n }, (_, i) => Math.round((((i * 7919) % 100_003) / 100_003 + i) * 1e5) / 1e5);

export const dataAccess = (name: string, args: ArgInit[] = [], kwargs: Record<string, ArgInit> = {}): ArgInit => ({
  kind: { case: "dataAccess", value: { name, args, kwargs } },
});

/** The JSON value of an argument or prediction, in either form. */
export function jsonOf(arg: Arg | undefined): JsonValue {
  const a = create(ArgMessage, arg);
  if (a.kind.case === "jsonText") return JSON.parse(a.kind.value) as JsonValue;
  if (a.kind.case !== "json") throw new Error(`expected a JSON argument, got ${a.kind.case}`);
  return toJson(ValueSchema, a.kind.value);
}

export function stateOf(value: Parameters<typeof toJson<typeof ValueSchema>>[1] | undefined): JsonValue {
  return value ? toJson(ValueSchema, value) : null;
}

/** A tensor argument, from the SDK's Tensor (its bytes as they are). */
export const tensorArg = (t: Tensor): ArgInit => ({
  kind: { case: "tensor", value: { dtype: DType[t.dtype.toUpperCase() as keyof typeof DType], shape: [...t.shape], data: t.toBytes() } },
});

/** The tensor an argument or prediction holds, of `dtype` (else this fails the test). */
export function tensorOf<D extends TensorDType>(arg: Arg | undefined, dtype: D): Tensor<D> {
  if (arg?.kind.case !== "tensor") throw new Error(`expected a tensor, got ${arg?.kind.case}`);
  const t = arg.kind.value;
  if (t.dtype !== DType[dtype.toUpperCase() as keyof typeof DType]) throw new Error(`expected a ${dtype} tensor, got ${DType[t.dtype]}`);
  return Tensor.fromBytes(dtype, t.shape, t.data);
}
