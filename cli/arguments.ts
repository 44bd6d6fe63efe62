/**
 * The command line's argument syntax: `-a VALUE` (positional) and `-k NAME=VALUE`
 * (keyword). VALUE is JSON when it parses as JSON (`42`, `'[1,2]'`, `'{"a":1}'`), else a
 * string; one that looks like JSON (it starts with `[`, `{` or `"`) and does not parse is
 * an error naming its position. `@NAME` is a data-access function the server lists (its
 * result becomes the argument), with its own arguments as a call: `@NAME(VALUE, …,
 * KEY=VALUE, …)`, each VALUE as above (a data-access call too); else `@FILE`: its JSON
 * when it ends in .json, else its bytes. `--args-json` takes the whole request's args
 * and kwargs as proto3 JSON instead.
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
  if (text.startsWith("@")) return parseAt(text, dataAccessNames, what);
  try {
    return JSON.parse(text) as JsonValue;
  } catch (error) {
    if (/^\s*[[{"]/.test(text)) {
      throw new UsageError(
        `${what}: ${JSON.stringify(text)} looks like JSON but does not parse (${(error as Error).message}); quote the shell word, or fix the JSON`,
      );
    }
    return text;
  }
}

/** `@NAME`, `@NAME(…)`: a data-access function with its arguments; else `@FILE`. */
function parseAt(text: string, dataAccessNames: ReadonlySet<string>, what: string): ArgValue {
  const call = /^@([^()\s]+)\((.*)\)$/s.exec(text);
  if (call && dataAccessNames.has(call[1]!)) {
    const name = call[1]!;
    const args: ArgValue[] = [];
    const kwargs: Record<string, ArgValue> = {};
    for (const item of splitTopLevel(call[2]!, `${what}: ${text}`)) {
      if (item.trim() === "") throw new UsageError(`${what}: ${text} has an empty argument: write @NAME(VALUE, KEY=VALUE)`);
      const keyword = /^\s*([A-Za-z_][\w.-]*)\s*=/.exec(item);
      if (keyword) kwargs[keyword[1]!] = parseValue(item.slice(keyword[0].length).trim(), dataAccessNames, `${what} @${name} ${keyword[1]}`);
      else args.push(parseValue(item.trim(), dataAccessNames, `${what} @${name} argument ${args.length + 1}`));
    }
    return dataAccess(name, args, kwargs);
  }
  const name = text.slice(1);
  if (dataAccessNames.has(name)) return dataAccess(name);
  let bytes: Buffer;
  try {
    bytes = readFileSync(name);
  } catch (error) {
    const known = [...dataAccessNames].join(", ") || "none";
    const called = call ? ` (${call[1]} is not one: a call is @NAME(VALUE, KEY=VALUE))` : "";
    throw new UsageError(
      `${what}: ${text} is neither a data-access function${called} (known: ${known}) nor a readable file (${(error as Error).message})`,
    );
  }
  if (!name.endsWith(".json")) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    return JSON.parse(bytes.toString("utf8")) as JsonValue;
  } catch (error) {
    throw new UsageError(`${what}: ${name} is not valid JSON: ${(error as Error).message}`);
  }
}

/** The items of a call's argument list: split at the commas outside brackets, braces, parentheses and strings. */
function splitTopLevel(list: string, what: string): string[] {
  const items: string[] = [];
  const open: string[] = [];
  const closing: Record<string, string> = { "[": "]", "{": "}", "(": ")" };
  let start = 0;
  let inString = false;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c in closing) open.push(closing[c]!);
    else if (c === "]" || c === "}" || c === ")") {
      if (open.pop() !== c) throw new UsageError(`${what}: an unmatched ${c} at character ${i + 1} of its arguments`);
    } else if (c === "," && open.length === 0) {
      items.push(list.slice(start, i));
      start = i + 1;
    }
  }
  if (inString || open.length > 0) throw new UsageError(`${what}: ${inString ? "a string" : `a ${open.at(-1)}`} is not closed in its arguments`);
  const last = list.slice(start);
  if (items.length > 0 || last.trim() !== "") items.push(last);
  return items;
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
