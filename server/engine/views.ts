/**
 * What a client sees of an action's arguments and result: inline up to
 * inline_payload_bytes, summaries beyond, or in full where the client asks for it
 * (ActionView). Views share what they can with the live state; nothing here changes
 * a view it was given.
 */
import { create } from "@bufbuild/protobuf";
import { type Action, ActionResultSchema, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import type { ArgNode, CallArgs } from "./args.ts";
import { type Payload, payloadArg } from "./payloads.ts";

export interface ViewLimits {
  /** Larger arguments and results show as summaries in BASIC views. */
  inlineBytes: number;
  /** Larger JSON shows as json_text even where json was asked for. */
  maxJsonValueBytes: number;
}

/** The arguments as a view shows them. */
export function argsView(call: CallArgs, inlineBytes: number, maxJsonValueBytes: number): { args: Arg[]; kwargs: Record<string, Arg> } {
  const one = (node: ArgNode): Arg => {
    if (node.kind !== "data_access") return payloadArg(node, inlineBytes, maxJsonValueBytes);
    return create(ArgSchema, { kind: { case: "dataAccess", value: { name: node.name, ...argsView(node, inlineBytes, maxJsonValueBytes) } } });
  };
  const kwargs: Record<string, Arg> = {};
  for (const [name, node] of Object.entries(call.kwargs)) kwargs[name] = one(node);
  return { args: call.args.map(one), kwargs };
}

/** The action with its result (and, for FULL, its arguments) in full. */
export function fullerView(view: Action, payloads: { args: CallArgs; result: Payload | undefined }, which: ActionView, limits: ViewLimits): Action {
  if (which === ActionView.BASIC) return view;
  const { result } = payloads;
  const fuller: Partial<Action> = {};
  if (result && view.result) {
    fuller.result = create(ActionResultSchema, { ...view.result, prediction: payloadArg(result, Infinity, limits.maxJsonValueBytes) });
  }
  if (which === ActionView.FULL) Object.assign(fuller, argsView(payloads.args, Infinity, limits.maxJsonValueBytes));
  return Object.keys(fuller).length ? (Object.freeze({ ...view, ...fuller }) as Action) : view;
}
