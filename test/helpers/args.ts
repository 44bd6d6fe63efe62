/** Building arguments and reading results in tests. */
import { create, fromJson, type JsonValue, type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { ArgSchema as ArgMessage } from "../../gen/plinth/v1/arg_pb.ts";

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
