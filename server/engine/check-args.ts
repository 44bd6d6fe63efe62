/**
 * Arguments checked against the schemas their functions declared: a request's before
 * anything runs (INVALID_ARGUMENT, no action), and data-access results before the call
 * that takes them (the action fails with invalid_argument).
 */
import { CallKind, type Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { invalid } from "../errors.ts";
import { type Instance, OPAQUE, problems, TensorInstance } from "./arg-schemas.ts";
import type { ArgNode, CallArgs, ParsedArgs } from "./args.ts";
import type { ResolvedArgs } from "./data-access.ts";
import { MAX_PARSED_JSON_BYTES as MAX_CHECKED_BYTES, textOf } from "./payloads.ts";
import type { PluginRegistry } from "./plugins.ts";

const decoder = new TextDecoder();

function fromNode(node: ArgNode): Instance {
  switch (node.kind) {
    case "json":
      return node.bytes <= MAX_CHECKED_BYTES ? JSON.parse(textOf(node)) : OPAQUE;
    case "list":
      return node.items.map(fromNode);
    case "map":
      return mapValues(node.entries, fromNode);
    case "tensor":
      return new TensorInstance(node.tensor.dtype, node.tensor.shape);
    default:
      return OPAQUE;
  }
}

function fromValue(value: Value): Instance {
  const kind = value.kind;
  switch (kind.case) {
    case "jsonUtf8":
      return kind.value.byteLength <= MAX_CHECKED_BYTES ? JSON.parse(decoder.decode(kind.value)) : OPAQUE;
    case "jsonText":
      return kind.value.length <= MAX_CHECKED_BYTES ? JSON.parse(kind.value) : OPAQUE;
    case "list":
      return kind.value.items.map(fromValue);
    case "map":
      return mapValues(kind.value.entries, fromValue);
    case "tensor":
      return new TensorInstance(kind.value.dtype, kind.value.shape);
    default:
      return OPAQUE;
  }
}

function mapValues<T>(record: Readonly<Record<string, T>>, f: (v: T) => Instance): Record<string, Instance> {
  const out: Record<string, Instance> = {};
  for (const [k, v] of Object.entries(record)) out[k] = f(v);
  return out;
}

/** Throws INVALID_ARGUMENT naming each argument that does not match, with data access's own arguments. */
export function checkRequest(plugins: Pick<PluginRegistry, "check">, target: string, kind: CallKind, parsed: ParsedArgs): void {
  const issues: string[] = [];
  const level = (fn: string, k: CallKind, node: CallArgs, prefix: string) => {
    const check = plugins.check(fn, k);
    if (check) issues.push(...problems(check, node.args.map(fromNode), mapValues(node.kwargs, fromNode), prefix));
  };
  level(target, kind, parsed, "");
  for (const node of parsed.dataAccess) level(node.name, CallKind.DATA_ACCESS, node, `${node.path}.`);
  if (issues.length) throw invalid(issues.slice(0, 3).join("; "));
}

/** What is wrong with arguments whose data access has run, as messages; none when they match. */
export function resolvedProblems(plugins: Pick<PluginRegistry, "check">, target: string, kind: CallKind, resolved: ResolvedArgs): string[] {
  const check = plugins.check(target, kind);
  return check ? problems(check, resolved.args.map(fromValue), mapValues(resolved.kwargs, fromValue)) : [];
}
