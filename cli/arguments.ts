/**
 * The command line's argument syntax: `-a VALUE` (positional) and `-k NAME=VALUE`
 * (keyword). VALUE is JSON when it parses as JSON (`42`, `'[1,2]'`, `'{"a":1}'`), else a
 * string; `@NAME` is a data-access function the server lists (its result becomes the
 * argument), else the file NAME: its JSON when it ends in .json, else its bytes.
 * `--args-json` takes the whole request's args and kwargs as proto3 JSON instead.
 */
import { readFileSync } from "node:fs";
import { fromJson } from "@bufbuild/protobuf";
import { type ArgValue, dataAccess } from "../client/mod.ts";
import { type Arg, ArgSchema } from "../gen/plinth/v1/arg_pb.ts";
import type { JsonValue } from "../sdk/mod.ts";

export class UsageError extends Error {
  override name = "UsageError";
}

/** One VALUE as the command line writes it. */
export function parseValue(text: string, dataAccessNames: ReadonlySet<string>, what: string): ArgValue {
  if (text.startsWith("@")) {
    const name = text.slice(1);
    if (dataAccessNames.has(name)) return dataAccess(name);
    let bytes: Buffer;
    try {
      bytes = readFileSync(name);
    } catch (error) {
      const known = [...dataAccessNames].join(", ") || "none";
      throw new UsageError(`${what}: ${text} is neither a data-access function (known: ${known}) nor a readable file (${(error as Error).message})`);
    }
    if (!name.endsWith(".json")) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    try {
      return JSON.parse(bytes.toString("utf8")) as JsonValue;
    } catch (error) {
      throw new UsageError(`${what}: ${name} is not valid JSON: ${(error as Error).message}`);
    }
  }
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}

export interface ParsedArgs {
  args: ArgValue[];
  kwargs: Record<string, ArgValue>;
}

export function parseArgValues(args: readonly string[], kwargs: readonly string[], dataAccessNames: ReadonlySet<string>): ParsedArgs {
  const parsed: ParsedArgs = { args: [], kwargs: {} };
  args.forEach((text, i) => {
    parsed.args.push(parseValue(text, dataAccessNames, `-a #${i + 1}`));
  });
  for (const pair of kwargs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`-k ${pair}: write NAME=VALUE, e.g. -k sleep=3 or -k data=@iris.inputs`);
    const name = pair.slice(0, eq);
    parsed.kwargs[name] = parseValue(pair.slice(eq + 1), dataAccessNames, `-k ${name}`);
  }
  return parsed;
}

/** `--args-json '{"args": [{"json": 1}], "kwargs": {"x": {"json_text": "[1]"}}}'`: Args in proto3 JSON. */
export function parseArgsJson(text: string): { args: Arg[]; kwargs: Record<string, Arg> } {
  let doc: { args?: unknown[]; kwargs?: Record<string, unknown> };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (error) {
    throw new UsageError(`--args-json is not valid JSON: ${(error as Error).message}`);
  }
  try {
    return {
      args: (doc.args ?? []).map((a) => fromJson(ArgSchema, a as never)),
      kwargs: Object.fromEntries(Object.entries(doc.kwargs ?? {}).map(([k, v]) => [k, fromJson(ArgSchema, v as never)])),
    };
  } catch (error) {
    throw new UsageError(`--args-json: ${(error as Error).message}`);
  }
}
