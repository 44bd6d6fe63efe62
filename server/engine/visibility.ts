/**
 * What a caller sees of another caller's action (server.auth.visibility). With "own", the
 * default, a caller sees its own actions in full and others' redacted: what each argument,
 * the result and the checkpoint are (kinds, sizes, tensor shapes), never what they hold;
 * no log lines, no error stacks or details. Status, progress, times, the error's code and
 * message stay. The roles admin and read_all see every action in full, as every caller
 * does with "all" (and the anonymous caller of a server without authentication).
 */
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Action, ActionError } from "../../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgKind, ArgSchema, type ArgSummary, ArgSummarySchema } from "../../gen/plinth/v1/arg_pb.ts";
import type { WatchStateResponse } from "../../gen/plinth/v1/state_service_pb.ts";
import { utf8Strings } from "../../sdk/worker/encode-chunks.ts";
import { type Caller, hasRole } from "./caller.ts";

export type Visibility = "own" | "all";

/** Whether `viewer` sees every caller's actions in full. */
export function seesAll(viewer: Caller, visibility: Visibility): boolean {
  return visibility === "all" || hasRole(viewer, "admin") || viewer.roles.has("read_all");
}

/** The action as `viewer` may see it. */
export function shownTo(viewer: Caller, visibility: Visibility): (action: Action) => Action {
  if (seesAll(viewer, visibility)) return (action) => action;
  return (action) => (action.createdBy === viewer.name ? action : redacted(action));
}

/** A state stream's message as `show` shows its actions. */
export function shownState(message: WatchStateResponse, show: (action: Action) => Action): WatchStateResponse {
  const event = message.event;
  if (event.case === "actionUpserted") {
    const action = show(event.value);
    return action === event.value ? message : { ...message, event: { case: "actionUpserted", value: action } };
  }
  if (event.case === "snapshot") {
    const actions = event.value.actions.map(show);
    return actions.every((a, i) => a === event.value.actions[i])
      ? message
      : { ...message, event: { case: "snapshot", value: { ...event.value, actions } } };
  }
  return message;
}

/** A stream with each item as `f` makes it. */
export async function* mapped<T>(items: AsyncIterable<T>, f: (item: T) => T): AsyncIterable<T> {
  for await (const item of items) yield f(item);
}

/** Live views are frozen and replaced on change: each is redacted once, however many watch it. */
const redactions = new WeakMap<Action, Action>();

/** The action without its content: see the file's comment. */
export function redacted(action: Action): Action {
  const known = redactions.get(action);
  if (known) return known;
  const kwargs: Record<string, Arg> = {};
  for (const [name, arg] of Object.entries(action.kwargs)) kwargs[name] = sealed(arg);
  const shown: Action = {
    ...action,
    redacted: true,
    args: action.args.map(sealed),
    kwargs,
    logTail: [],
    dataAccess: action.dataAccess.map((d) => ({ ...d, logTail: [], ...(d.error ? { error: bare(d.error) } : {}) })),
    ...(action.error ? { error: bare(action.error) } : {}),
    ...(action.result?.prediction ? { result: { ...action.result, prediction: sealed(action.result.prediction) } } : {}),
    ...(action.checkpoint?.value ? { checkpoint: { ...action.checkpoint, value: sealed(action.checkpoint.value) } } : {}),
  };
  if (Object.isFrozen(action)) Object.freeze(shown);
  redactions.set(action, shown);
  return shown;
}

/** An error's code and message: no stack, no details. */
function bare(error: ActionError): ActionError {
  return error.stack || error.details ? { ...error, stack: "", details: undefined } : error;
}

/** The argument as a summary without content; a data-access call keeps its name, its own arguments sealed. */
function sealed(arg: Arg): Arg {
  const kind = arg.kind;
  if (kind.case === "dataAccess") {
    const kwargs: Record<string, Arg> = {};
    for (const [name, a] of Object.entries(kind.value.kwargs)) kwargs[name] = sealed(a);
    return create(ArgSchema, { kind: { case: "dataAccess", value: { name: kind.value.name, args: kind.value.args.map(sealed), kwargs } } });
  }
  return create(ArgSchema, { kind: { case: "summary", value: summaryOf(arg) } });
}

const encoder = new TextEncoder();

/** The size of a Value's JSON text; of its encoding where it has no JSON (NaN or ±Infinity in a plugin's result). */
function jsonSize(value: Value): number {
  try {
    return encoder.encode(JSON.stringify(toJson(ValueSchema, value))).byteLength;
  } catch {
    return toBinary(ValueSchema, value).byteLength;
  }
}

/** What an argument is and its size (its JSON text, bytes or tensor data; a list's or map's items summed). */
function summaryOf(arg: Arg): ArgSummary {
  const kind = arg.kind;
  switch (kind.case) {
    case "summary":
      return create(ArgSummarySchema, { ...kind.value, prefix: "" });
    case "json":
      return create(ArgSummarySchema, { kind: ArgKind.JSON, sizeBytes: BigInt(jsonSize(kind.value)) });
    case "jsonText":
      // A payload's text as the engine holds it: its UTF-8 is at hand, no need to decode it.
      return create(ArgSummarySchema, {
        kind: ArgKind.JSON_TEXT,
        sizeBytes: BigInt(utf8Strings.get(arg)?.byteLength ?? encoder.encode(kind.value).byteLength),
      });
    case "bytes":
      return create(ArgSummarySchema, { kind: ArgKind.BYTES, sizeBytes: BigInt(kind.value.byteLength) });
    case "tensor":
      return create(ArgSummarySchema, {
        kind: ArgKind.TENSOR,
        sizeBytes: BigInt(kind.value.data.byteLength),
        dtype: kind.value.dtype,
        shape: kind.value.shape,
      });
    case "list":
    case "map": {
      const items = kind.case === "list" ? kind.value.items : Object.values(kind.value.entries);
      let size = 0n;
      for (const item of items) size += summaryOf(item).sizeBytes;
      return create(ArgSummarySchema, { kind: kind.case === "list" ? ArgKind.LIST : ArgKind.MAP, sizeBytes: size, items: items.length });
    }
    default:
      return create(ArgSummarySchema);
  }
}
