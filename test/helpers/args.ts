/** Building arguments and reading results in tests. */
import { create, fromJson, type JsonValue, type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import { ArgSchema as ArgMessage } from "../../gen/plinth/v1/arg_pb.ts";

type ArgInit = MessageInitShape<typeof ArgSchema>;

export const json = (value: JsonValue): ArgInit => ({ kind: { case: "json", value: fromJson(ValueSchema, value) } });

export const dataAccess = (name: string, args: ArgInit[] = [], kwargs: Record<string, ArgInit> = {}): ArgInit => ({
  kind: { case: "dataAccess", value: { name, args, kwargs } },
});

/** The JSON value of an argument or prediction. */
export function jsonOf(arg: Arg | undefined): JsonValue {
  const a = create(ArgMessage, arg);
  if (a.kind.case !== "json") throw new Error(`expected a JSON argument, got ${a.kind.case}`);
  return toJson(ValueSchema, a.kind.value);
}

export function stateOf(value: Parameters<typeof toJson<typeof ValueSchema>>[1] | undefined): JsonValue {
  return value ? toJson(ValueSchema, value) : null;
}
