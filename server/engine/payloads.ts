/**
 * Arguments and results as the engine holds them: once, by reference, never cloned
 * per change. JSON is kept as UTF-8 text whatever form it came in (a `json` Value tree
 * of 5,000 numbers is 5,000 messages; its text is one array), so it crosses the server
 * without conversion: to the child as json_utf8, and a child's result back to the
 * client as the same bytes (encode-chunks writes them into json_text as they are). Its
 * text as a string is decoded only where something reads it: a small view, the history.
 *
 * Views of an action show a payload inline up to a size, as a summary beyond it, or
 * in full where a client asks for it (views.ts decides which).
 */
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Value as JsonValuePb, ValueSchema as JsonValueSchema } from "@bufbuild/protobuf/wkt";
import { type Arg, ArgKind, ArgSchema, type ArgSummary, ArgSummarySchema, type Tensor } from "../../gen/plinth/v1/arg_pb.ts";
import { type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { utf8Strings } from "../../sdk/worker/encode-chunks.ts";
import { invalid, quote } from "../errors.ts";

/** The form a JSON value travels in: a google.protobuf.Value tree, or text. */
export type JsonForm = "json" | "json_text";

/** One argument's or result's value. `bytes` is its size: JSON text, bytes or tensor data. */
export type Payload =
  | {
      readonly kind: "json";
      /** The JSON text, UTF-8 encoded (textOf decodes it). */
      readonly utf8: Uint8Array;
      readonly bytes: number;
      /** How the client sent it (results: how the client asked for it). */
      readonly form: JsonForm;
      /** The Value as the client sent it, kept only when small: views show it as is. */
      readonly value?: JsonValuePb;
    }
  | { readonly kind: "bytes"; readonly data: Uint8Array; readonly bytes: number }
  | { readonly kind: "tensor"; readonly tensor: Tensor; readonly bytes: number }
  /** A list or map argument: its items' sizes summed. */
  | { readonly kind: "list"; readonly items: readonly Payload[]; readonly bytes: number }
  | { readonly kind: "map"; readonly entries: Readonly<Record<string, Payload>>; readonly bytes: number };

/** A list of payloads as one. */
export function listPayload(items: Payload[]): Payload {
  let bytes = 0;
  for (const item of items) bytes += item.bytes;
  return { kind: "list", items, bytes };
}

/** A map of payloads as one. */
export function mapPayload(entries: Record<string, Payload>): Payload {
  let bytes = 0;
  for (const key in entries) bytes += entries[key]!.bytes;
  return { kind: "map", entries, bytes };
}

/** How many bytes of a tensor's data each element type takes. */
const elementBytes: Record<number, number> = { 1: 4, 2: 8, 3: 1, 4: 2, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 1 };

type JsonPayload = Extract<Payload, { kind: "json" }>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const texts = new WeakMap<JsonPayload, string>();

function jsonPayload(utf8: Uint8Array, form: JsonForm): JsonPayload {
  return { kind: "json", utf8, bytes: utf8.byteLength, form };
}

/** The JSON text of a payload, decoded once. */
export function textOf(payload: JsonPayload): string {
  let text = texts.get(payload);
  if (text === undefined) {
    text = decoder.decode(payload.utf8);
    texts.set(payload, text);
  }
  return text;
}

/**
 * Bytes of the child's answer to hold: a view into the frame, unless the frame's buffer
 * is much larger than the value (a small result in a 64 kB read), which would then be
 * held with it for as long as the action is.
 */
function own(bytes: Uint8Array): Uint8Array {
  return bytes.buffer.byteLength > 2 * bytes.byteLength + 1024 ? bytes.slice() : bytes;
}

/**
 * A client's argument as a payload, checked: JSON text must parse, a tensor's data must
 * match its shape. `keepValueBytes`: a `json` Value up to this size is kept as sent.
 */
/**
 * JSON above this size is not parsed on the server (not to check it is JSON, nor against a
 * schema): parsing 50 MB of numbers holds the server's one thread for half a second. The
 * plugin's child parses it anyway and fails the call naming the argument.
 */
export const MAX_PARSED_JSON_BYTES = 1 << 20;

export function payloadFromArg(arg: Arg, path: string, keepValueBytes: number): Payload | undefined {
  const kind = arg.kind;
  switch (kind.case) {
    case "json": {
      let json: unknown;
      try {
        json = toJson(JsonValueSchema, kind.value);
      } catch (error) {
        // NaN and ±Infinity (1e999 in JSON) have no JSON form; a Value must have a kind.
        throw invalid(
          /NaN|Infinity/.test((error as Error).message)
            ? `argument ${path}: json cannot hold NaN or ±Infinity (JSON has no such numbers; 1e999 is Infinity): send them in a tensor`
            : `argument ${path}: json holds an empty value: set one of null_value, number_value, string_value, bool_value, struct_value or list_value`,
        );
      }
      const payload = jsonPayload(encoder.encode(JSON.stringify(json)), "json");
      // Small ones are shown as sent: keep the Value rather than parse the text again.
      return payload.bytes <= keepValueBytes ? { ...payload, value: kind.value } : payload;
    }
    case "jsonText": {
      try {
        if (kind.value.length <= MAX_PARSED_JSON_BYTES) JSON.parse(kind.value);
      } catch (error) {
        throw invalid(`argument ${path}: json_text is not valid JSON (${(error as Error).message}): ${quote(kind.value)}`);
      }
      return jsonPayload(encoder.encode(kind.value), "json_text");
    }
    case "bytes":
      return { kind: "bytes", data: kind.value, bytes: kind.value.byteLength };
    case "tensor": {
      const t = kind.value;
      const size = elementBytes[t.dtype];
      if (!size) throw invalid(`argument ${path}: tensor dtype must be set, e.g. "D_TYPE_FLOAT32"`);
      const elements = t.shape.reduce((a, b) => a * b, 1);
      if (t.data.byteLength !== elements * size) {
        throw invalid(
          `argument ${path}: a tensor of shape [${t.shape.slice(0, 8).join(", ")}] needs ${elements * size} bytes of data, got ${t.data.byteLength}`,
        );
      }
      return { kind: "tensor", tensor: t, bytes: t.data.byteLength };
    }
    default:
      return undefined;
  }
}

/** A child's result (or data-access value) as a payload; JSON comes as UTF-8 from the SDK. */
export function payloadFromValue(value: Value | undefined, form: JsonForm): Payload {
  const kind = value?.kind;
  switch (kind?.case) {
    case "jsonUtf8":
      return jsonPayload(own(kind.value), form);
    case "jsonText":
      return jsonPayload(encoder.encode(kind.value), form);
    case "json":
      return jsonPayload(encoder.encode(JSON.stringify(toJson(JsonValueSchema, kind.value))), form);
    case "bytes":
      return { kind: "bytes", data: own(kind.value), bytes: kind.value.byteLength };
    case "tensor":
      return { kind: "tensor", tensor: { ...kind.value, data: own(kind.value.data) }, bytes: kind.value.data.byteLength };
    case "list":
      return listPayload(kind.value.items.map((item) => payloadFromValue(item, form)));
    case "map": {
      const entries: Record<string, Payload> = {};
      for (const [key, item] of Object.entries(kind.value.entries)) entries[key] = payloadFromValue(item, form);
      return mapPayload(entries);
    }
    default:
      return jsonPayload(encoder.encode("null"), form);
  }
}

/** The payload as the pipe protocol carries it to a child: JSON always as UTF-8. */
export function toWorkerValue(payload: Payload): Value {
  switch (payload.kind) {
    case "json":
      return create(ValueSchema, { kind: { case: "jsonUtf8", value: payload.utf8 } });
    case "bytes":
      return create(ValueSchema, { kind: { case: "bytes", value: payload.data } });
    case "tensor":
      return create(ValueSchema, { kind: { case: "tensor", value: payload.tensor } });
    case "list":
      return create(ValueSchema, { kind: { case: "list", value: { items: payload.items.map(toWorkerValue) } } });
    case "map": {
      const entries: Record<string, Value> = {};
      for (const [key, item] of Object.entries(payload.entries)) entries[key] = toWorkerValue(item);
      return create(ValueSchema, { kind: { case: "map", value: { entries } } });
    }
  }
}

/**
 * A json_text Arg for a payload: its text is decoded only if something reads it (the
 * history, a toBinary); encode-chunks writes the UTF-8 the payload holds instead.
 */
function jsonTextArg(payload: JsonPayload): Arg {
  const arg = create(ArgSchema);
  const kind = {
    case: "jsonText" as const,
    get value() {
      return textOf(payload);
    },
  };
  arg.kind = kind;
  utf8Strings.set(arg, payload.utf8);
  return arg;
}

const PREFIX_CHARS = 64;

/** The start of the text, from no more of its bytes than it needs. */
function prefixOf(payload: JsonPayload): string {
  return decoder
    .decode(payload.utf8.subarray(0, PREFIX_CHARS * 4))
    .slice(0, PREFIX_CHARS)
    .replace(/\uFFFD$/, "");
}
const kinds = { json: ArgKind.JSON, json_text: ArgKind.JSON_TEXT, bytes: ArgKind.BYTES, tensor: ArgKind.TENSOR } as const;

/** A list's or map's JSON items as one JSON text: its summary's prefix. */
function compositePrefix(payload: Extract<Payload, { kind: "list" | "map" }>): string {
  const one = (p: Payload): string => (p.kind === "json" ? prefixOf(p) : `<${p.kind}>`);
  const text =
    payload.kind === "list"
      ? `[${payload.items.slice(0, 8).map(one).join(",")}`
      : `{${Object.entries(payload.entries)
          .slice(0, 8)
          .map(([k, p]) => `${JSON.stringify(k)}:${one(p)}`)
          .join(",")}`;
  return text.slice(0, PREFIX_CHARS);
}

function summaryOf(payload: Payload): ArgSummary {
  switch (payload.kind) {
    case "json":
      return create(ArgSummarySchema, { kind: kinds[payload.form], sizeBytes: BigInt(payload.bytes), prefix: prefixOf(payload) });
    case "bytes":
      return create(ArgSummarySchema, { kind: ArgKind.BYTES, sizeBytes: BigInt(payload.bytes) });
    case "tensor":
      return create(ArgSummarySchema, {
        kind: ArgKind.TENSOR,
        sizeBytes: BigInt(payload.bytes),
        dtype: payload.tensor.dtype,
        shape: payload.tensor.shape,
      });
    case "list":
    case "map":
      return create(ArgSummarySchema, {
        kind: payload.kind === "list" ? ArgKind.LIST : ArgKind.MAP,
        sizeBytes: BigInt(payload.bytes),
        prefix: compositePrefix(payload),
        items: payload.kind === "list" ? payload.items.length : Object.keys(payload.entries).length,
      });
  }
}

/**
 * The payload as an Arg: a summary above `inlineBytes`, else the value itself, JSON in
 * its form (as json up to `maxJsonValueBytes`, as json_text beyond).
 */
export function payloadArg(payload: Payload, inlineBytes: number, maxJsonValueBytes: number): Arg {
  if (payload.bytes > inlineBytes) return create(ArgSchema, { kind: { case: "summary", value: summaryOf(payload) } });
  switch (payload.kind) {
    case "json":
      if (payload.form === "json_text" || payload.bytes > maxJsonValueBytes) {
        return jsonTextArg(payload);
      }
      return create(ArgSchema, {
        kind: { case: "json", value: payload.value ?? fromJson(JsonValueSchema, JSON.parse(textOf(payload)) as JsonValue) },
      });
    case "bytes":
      return create(ArgSchema, { kind: { case: "bytes", value: payload.data } });
    case "tensor":
      return create(ArgSchema, { kind: { case: "tensor", value: payload.tensor } });
    case "list":
      return create(ArgSchema, {
        kind: { case: "list", value: { items: payload.items.map((item) => payloadArg(item, inlineBytes, maxJsonValueBytes)) } },
      });
    case "map": {
      const entries: Record<string, Arg> = {};
      for (const [key, item] of Object.entries(payload.entries)) entries[key] = payloadArg(item, inlineBytes, maxJsonValueBytes);
      return create(ArgSchema, { kind: { case: "map", value: { entries } } });
    }
  }
}
