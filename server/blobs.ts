/**
 * Actions carry their arguments without blobs — bytes emptied, tensors with their dtype
 * and shape but not their data — so that watchers and the history never carry them;
 * the history also drops them from results. The plugin still gets everything.
 */
import { clone } from "@bufbuild/protobuf";
import { type Action, ActionSchema } from "../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgSchema } from "../gen/plinth/v1/arg_pb.ts";

function strip(arg: Arg | undefined): void {
  const kind = arg?.kind;
  switch (kind?.case) {
    case "bytes":
      kind.value = new Uint8Array();
      return;
    case "tensor":
      kind.value.data = new Uint8Array();
      return;
    case "dataAccess":
      kind.value.args.forEach(strip);
      Object.values(kind.value.kwargs).forEach(strip);
      return;
  }
}

const hasBlob = (arg: Arg | undefined): boolean => {
  const kind = arg?.kind;
  if (kind?.case === "bytes" || kind?.case === "tensor") return true;
  if (kind?.case === "dataAccess") return kind.value.args.some(hasBlob) || Object.values(kind.value.kwargs).some(hasBlob);
  return false;
};

/** The argument as an action shows it: without blobs. */
export function argWithoutBlobs(arg: Arg): Arg {
  if (!hasBlob(arg)) return arg;
  const copy = clone(ArgSchema, arg);
  strip(copy);
  return copy;
}

/** The action as the history keeps it: no blobs in its arguments or its result. */
export function withoutBlobs(action: Action): Action {
  const all = [...action.args, ...Object.values(action.kwargs), action.result?.prediction];
  if (!all.some(hasBlob)) return action;
  const copy = clone(ActionSchema, action);
  copy.args.forEach(strip);
  Object.values(copy.kwargs).forEach(strip);
  strip(copy.result?.prediction);
  return copy;
}
