/**
 * A request's arguments, checked against the limits and turned into payloads once:
 * every argument, nested data access included, with where it sits ("args[0]",
 * "kwargs.x", "kwargs.x.args[1]") for messages and progress entries.
 */
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { cut, invalid, quote } from "../errors.ts";
import { listPayload, mapPayload, type Payload, payloadFromArg } from "./payloads.ts";

/** How deep lists and maps may nest in one argument. */
const MAX_NESTING = 16;

const argPath = {
  positional: (parent: string, index: number) => `${parent ? `${parent}.` : ""}args[${index}]`,
  keyword: (parent: string, name: string) => `${parent ? `${parent}.` : ""}kwargs.${name}`,
};

/** A DataAccess argument: the engine calls `name` and passes its result in its place. */
export interface DataAccessNode {
  readonly kind: "data_access";
  readonly path: string;
  readonly name: string;
  readonly args: readonly ArgNode[];
  readonly kwargs: Readonly<Record<string, ArgNode>>;
}

export type ArgNode = Payload | DataAccessNode;

export interface CallArgs {
  readonly args: readonly ArgNode[];
  readonly kwargs: Readonly<Record<string, ArgNode>>;
}

export interface ArgLimits {
  maxArgs: number;
  maxKwargs: number;
  maxDataAccess: number;
  maxDataAccessDepth: number;
  /** A `json` Value up to this size is kept as sent, for views. */
  keepValueBytes: number;
}

export interface ParsedArgs extends CallArgs {
  /** Every DataAccess node, innermost first. */
  readonly dataAccess: readonly DataAccessNode[];
  /** The payloads' total size. */
  readonly bytes: number;
}

/**
 * Checks every argument against the limits; `isDataAccess` says whether a name is a
 * known data-access function. Throws INVALID_ARGUMENT naming the argument.
 */
export function parseArgs(args: Arg[], kwargs: Record<string, Arg>, limits: ArgLimits, isDataAccess: (name: string) => boolean): ParsedArgs {
  const dataAccess: DataAccessNode[] = [];
  let accessed = 0;
  let bytes = 0;
  const level = (args: Arg[], kwargs: Record<string, Arg>, parent: string, depth: number): CallArgs => {
    const where = parent ? `data access ${parent}` : "the request";
    if (args.length > limits.maxArgs) {
      throw invalid(`${where} has ${args.length} args; engine.max_args allows ${limits.maxArgs}`);
    }
    const names = Object.keys(kwargs);
    if (names.length > limits.maxKwargs) {
      throw invalid(`${where} has ${names.length} kwargs; engine.max_kwargs allows ${limits.maxKwargs}`);
    }
    /** A value that holds no data access: JSON, bytes, a tensor, or a list or map of them. */
    const value = (arg: Arg, path: string, nesting: number): Payload | undefined => {
      const kind = arg.kind;
      if (kind.case !== "list" && kind.case !== "map") return payloadFromArg(arg, path, limits.keepValueBytes);
      if (nesting >= MAX_NESTING) throw invalid(`argument ${path}: lists and maps nest more than ${MAX_NESTING} deep`);
      const inner = (item: Arg, itemPath: string) => {
        const payload = value(item, itemPath, nesting + 1);
        if (payload) return payload;
        if (item.kind.case === "dataAccess") {
          throw invalid(`argument ${itemPath}: data_access cannot be inside a list or map; pass it as an argument of its own`);
        }
        throw invalid(`argument ${itemPath}: set one of json, json_text, bytes, tensor, list or map`);
      };
      if (kind.case === "list") {
        const items = kind.value.items;
        if (items.length > limits.maxArgs)
          throw invalid(`argument ${path}: a list of ${items.length} items; engine.max_args allows ${limits.maxArgs}`);
        return listPayload(items.map((item, i) => inner(item, `${path}[${i}]`)));
      }
      const names = Object.keys(kind.value.entries);
      if (names.length > limits.maxKwargs) {
        throw invalid(`argument ${path}: a map of ${names.length} entries; engine.max_kwargs allows ${limits.maxKwargs}`);
      }
      const entries: Record<string, Payload> = {};
      for (const name of names) entries[name] = inner(kind.value.entries[name]!, `${path}.${cut(name)}`);
      return mapPayload(entries);
    };
    const one = (arg: Arg, path: string): ArgNode => {
      const payload = value(arg, path, 0);
      if (payload) {
        bytes += payload.bytes;
        return payload;
      }
      if (arg.kind.case !== "dataAccess") throw invalid(`argument ${path}: set one of json, json_text, bytes, tensor, list, map or data_access`);
      const access = arg.kind.value;
      if (!access.name) throw invalid(`argument ${path}: data_access needs a name`);
      if (!isDataAccess(access.name)) {
        throw invalid(`argument ${path}: ${quote(access.name)} is not a data-access function of any loaded plugin (see ListPlugins)`);
      }
      if (depth + 1 > limits.maxDataAccessDepth) {
        throw invalid(`argument ${path}: data access nests ${depth + 1} deep; engine.max_data_access_depth allows ${limits.maxDataAccessDepth}`);
      }
      // Counted before the inner ones are walked, so that a flood is refused at once.
      if (++accessed > limits.maxDataAccess) {
        throw invalid(
          `argument ${path}: more than ${limits.maxDataAccess} data-access arguments; engine.max_data_access allows ${limits.maxDataAccess} per request`,
        );
      }
      const node: DataAccessNode = { kind: "data_access", path, name: access.name, ...level(access.args, access.kwargs, path, depth + 1) };
      dataAccess.push(node);
      return node;
    };
    const outArgs = args.map((arg, i) => one(arg, argPath.positional(parent, i)));
    const outKwargs: Record<string, ArgNode> = {};
    for (const name of names) {
      if (!name) throw invalid(`argument ${argPath.keyword(parent, name)}: keyword names must not be empty`);
      outKwargs[name] = one(kwargs[name]!, argPath.keyword(parent, cut(name)));
    }
    return { args: outArgs, kwargs: outKwargs };
  };
  const top = level(args, kwargs, "", 0);
  return { ...top, dataAccess, bytes };
}
