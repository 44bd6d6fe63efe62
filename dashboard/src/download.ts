/**
 * An action's arguments and prediction as files: bytes as they are, a tensor as NumPy's
 * .npy (numpy.load reads it), JSON as .json. A large argument is a summary in the views the
 * page holds; its content comes from GetAction's FULL view, as far as the server kept it.
 */
import { type Action, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgKind, DType, type Tensor } from "../../gen/plinth/v1/arg_pb.ts";
import { actions } from "./api.ts";
import { json } from "./format.ts";

/** Where an argument is in its action: "args[0]", "kwargs.x" or "prediction". */
export type Place = string;

export function argAt(a: Action, place: Place): Arg | undefined {
  if (place === "prediction") return a.result?.prediction;
  const position = /^args\[(\d+)\]$/.exec(place);
  return position ? a.args[Number(position[1])] : a.kwargs[place.replace(/^kwargs\./, "")];
}

/**
 * Whether an argument is worth a file: bytes, a tensor, or JSON too large to show (a
 * summary). JSON shown in full on the page needs none.
 */
export function savable(arg: Arg | undefined): boolean {
  const k = arg?.kind;
  if (k?.case === "summary") return [ArgKind.BYTES, ArgKind.TENSOR, ArgKind.JSON, ArgKind.JSON_TEXT].includes(k.value.kind);
  return k?.case === "bytes" || k?.case === "tensor";
}

/** Downloads an action's argument (or prediction) as a file; an error's words when it cannot. */
export async function saveArg(a: Action, place: Place): Promise<string | undefined> {
  let arg = argAt(a, place);
  if (arg?.kind.case === "summary") arg = argAt((await actions.getAction({ actionId: a.id, view: ActionView.FULL })).action!, place);
  if (!arg || arg.kind.case === "summary") return `${place} is no longer kept in full (over the server's backend.max_payload_bytes)`;
  const file = fileOf(arg);
  if (!file) return `${place} is not one file`;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([file.content as Uint8Array<ArrayBuffer>], { type: file.type }));
  link.download = `${a.id}-${place.replace(/[^\w.-]+/g, "_")}${file.extension}`;
  link.click();
  // Not at once: the browser may still be reading it.
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return undefined;
}

function fileOf(arg: Arg): { content: Uint8Array | string; extension: string; type: string } | undefined {
  const k = arg.kind;
  if (k.case === "bytes") return { content: k.value, extension: ".bin", type: "application/octet-stream" };
  if (k.case === "tensor") return { content: npy(k.value), extension: ".npy", type: "application/octet-stream" };
  if (k.case === "jsonText") return { content: k.value, extension: ".json", type: "application/json" };
  if (k.case === "json") return { content: JSON.stringify(json(k.value)), extension: ".json", type: "application/json" };
  return undefined;
}

/** NumPy's descr of each DType: little-endian, as the tensor's data is. */
const DESCR: Record<DType, string> = {
  [DType.UNSPECIFIED]: "<f4",
  [DType.FLOAT32]: "<f4",
  [DType.FLOAT64]: "<f8",
  [DType.INT8]: "|i1",
  [DType.INT16]: "<i2",
  [DType.INT32]: "<i4",
  [DType.INT64]: "<i8",
  [DType.UINT8]: "|u1",
  [DType.UINT16]: "<u2",
  [DType.UINT32]: "<u4",
  [DType.UINT64]: "<u8",
  [DType.BOOL]: "|b1",
};

/** A tensor in NumPy's .npy format, version 1.0: the magic, a header padded to 64 bytes, the data. */
export function npy(t: Tensor): Uint8Array {
  const shape = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(", ")})`;
  const descr = DESCR[t.dtype];
  if (!descr) throw new Error(`a tensor of dtype ${t.dtype} has no .npy form here`);
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += `${" ".repeat(63 - ((10 + header.length) % 64))}\n`;
  const out = new Uint8Array(10 + header.length + t.data.byteLength);
  out.set([0x93, ...new TextEncoder().encode("NUMPY"), 1, 0, header.length & 0xff, header.length >> 8]);
  out.set(new TextEncoder().encode(header), 10);
  out.set(t.data, 10 + header.length);
  return out;
}
