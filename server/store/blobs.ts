/**
 * The action history keeps arguments and results as JSON without their blobs: bytes
 * are emptied and tensors keep their dtype and shape but not their data. The live
 * action (GetAction while it runs) still has them.
 */
import { clone } from "@bufbuild/protobuf";
import { type Action, ActionSchema } from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";

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

export function withoutBlobs(action: Action): Action {
  const all = [...action.args, ...Object.values(action.kwargs), action.result?.prediction];
  if (!all.some(hasBlob)) return action;
  const copy = clone(ActionSchema, action);
  copy.args.forEach(strip);
  Object.values(copy.kwargs).forEach(strip);
  strip(copy.result?.prediction);
  return copy;
}
