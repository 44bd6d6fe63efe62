/**
 * Arguments: validation of what a client sent, and conversion of resolved
 * arguments to the pipe protocol's values.
 */
import { create } from "@bufbuild/protobuf";
import { NullValue } from "@bufbuild/protobuf/wkt";
import { type Arg, ArgSchema, type DataAccess, DType } from "../../gen/plinth/v1/arg_pb.ts";
import { type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { invalid } from "../errors.ts";

const elementBytes: Record<number, number> = {
  [DType.FLOAT32]: 4,
  [DType.FLOAT64]: 8,
  [DType.INT8]: 1,
  [DType.INT16]: 2,
  [DType.INT32]: 4,
  [DType.INT64]: 8,
  [DType.UINT8]: 1,
  [DType.UINT16]: 2,
  [DType.UINT32]: 4,
  [DType.UINT64]: 8,
  [DType.BOOL]: 1,
};

export const argPath = {
  positional: (parent: string, index: number) => `${parent ? `${parent}.` : ""}args[${index}]`,
  keyword: (parent: string, name: string) => `${parent ? `${parent}.` : ""}kwargs.${name}`,
};

/** A DataAccess argument found in a call, with where it sits. */
export interface DataAccessNode {
  path: string;
  access: DataAccess;
}

/**
 * Checks every argument, nested ones included, and returns the DataAccess nodes in
 * depth-first order. `isDataAccess` says whether a name is a known data-access function.
 */
export function validateArgs(
  args: Arg[],
  kwargs: Record<string, Arg>,
  isDataAccess: (name: string) => boolean,
  parent = "",
): DataAccessNode[] {
  const nodes: DataAccessNode[] = [];
  const visit = (arg: Arg, path: string) => {
    const kind = arg.kind;
    switch (kind.case) {
      case "json":
      case "bytes":
        return;
      case "tensor": {
        const t = kind.value;
        const size = elementBytes[t.dtype];
        if (!size) throw invalid(`argument ${path}: tensor dtype must be set, e.g. "D_TYPE_FLOAT32"`);
        const elements = t.shape.reduce((a, b) => a * b, 1);
        if (t.data.byteLength !== elements * size) {
          throw invalid(
            `argument ${path}: a tensor of shape [${t.shape.join(", ")}] needs ${elements * size} bytes of data, got ${t.data.byteLength}`,
          );
        }
        return;
      }
      case "dataAccess": {
        const access = kind.value;
        if (!access.name) throw invalid(`argument ${path}: data_access needs a name`);
        if (!isDataAccess(access.name)) {
          throw invalid(`argument ${path}: "${access.name}" is not a data-access function of any loaded plugin (see ListPlugins)`);
        }
        nodes.push(...validateArgs(access.args, access.kwargs, isDataAccess, path), { path, access });
        return;
      }
      default:
        throw invalid(`argument ${path}: set one of json, bytes, tensor or data_access`);
    }
  };
  args.forEach((arg, i) => visit(arg, argPath.positional(parent, i)));
  for (const [name, arg] of Object.entries(kwargs)) {
    if (!name) throw invalid(`argument ${argPath.keyword(parent, name)}: keyword names must not be empty`);
    visit(arg, argPath.keyword(parent, name));
  }
  return nodes;
}

/** A resolved argument (never DataAccess) as a pipe value. */
export function toValue(arg: Arg): Value {
  const kind = arg.kind;
  switch (kind.case) {
    case "json":
      return create(ValueSchema, { kind: { case: "json", value: kind.value } });
    case "bytes":
      return create(ValueSchema, { kind: { case: "bytes", value: kind.value } });
    case "tensor":
      return create(ValueSchema, { kind: { case: "tensor", value: kind.value } });
    default:
      throw new Error(`argument kind ${kind.case} must be resolved before the call`);
  }
}

/** A pipe value (a plugin's result) as an argument or prediction. */
export function toArg(value: Value | undefined): Arg {
  const kind = value?.kind;
  switch (kind?.case) {
    case "json":
      return create(ArgSchema, { kind: { case: "json", value: kind.value } });
    case "bytes":
      return create(ArgSchema, { kind: { case: "bytes", value: kind.value } });
    case "tensor":
      return create(ArgSchema, { kind: { case: "tensor", value: kind.value } });
    default:
      return create(ArgSchema, { kind: { case: "json", value: { kind: { case: "nullValue", value: NullValue.NULL_VALUE } } } });
  }
}

/** JSON null as a pipe value. */
export function nullValue(): Value {
  return create(ValueSchema, { kind: { case: "json", value: { kind: { case: "nullValue", value: NullValue.NULL_VALUE } } } });
}
