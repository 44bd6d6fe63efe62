/**
 * Arguments and results as the engine holds them: once, by reference, never cloned
 * per change. JSON is kept as text whatever form it came in (a `json` Value tree of
 * 5,000 numbers is 5,000 messages; its text is one string), so it crosses the server
 * without conversion: client → child as json_text, child → client the same way.
 *
 * Views of an action show a payload inline up to a size, as a summary beyond it, or
 * in full where a client asks for it (views.ts decides which).
 */
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Value as JsonValuePb, ValueSchema as JsonValueSchema } from "@bufbuild/protobuf/wkt";
import { type Arg, ArgKind, ArgSchema, type ArgSummary, ArgSummarySchema, type Tensor } from "../../gen/plinth/v1/arg_pb.ts";
import { type Value, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { invalid, quote } from "../errors.ts";

/** The form a JSON value travels in: a google.protobuf.Value tree, or text. */
export type JsonForm = "json" | "json_text";

/** One argument's or result's value. `bytes` is its size: JSON text, bytes or tensor data. */
export type Payload =
  | {
      readonly kind: "json";
      readonly text: string;
      readonly bytes: number;
      /** How the client sent it (results: how the client asked for it). */
      readonly form: JsonForm;
      /** The Value as the client sent it, kept only when small: views show it as is. */
      readonly value?: JsonValuePb;
    }
  | { readonly kind: "bytes"; readonly data: Uint8Array; readonly bytes: number }
  | { readonly kind: "tensor"; readonly tensor: Tensor; readonly bytes: number };

/** How many bytes of a tensor's data each element type takes. */
const elementBytes: Record<number, number> = { 1: 4, 2: 8, 3: 1, 4: 2, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 1 };

type JsonPayload = Extract<Payload, { kind: "json" }>;

function jsonPayload(text: string, form: JsonForm): JsonPayload {
  return { kind: "json", text, bytes: Buffer.byteLength(text), form };
}

/**
 * A client's argument as a payload, checked: JSON text must parse, a tensor's data must
 * match its shape. `keepValueBytes`: a `json` Value up to this size is kept as sent.
 */
export function payloadFromArg(arg: Arg, path: string, keepValueBytes: number): Payload | undefined {
  const kind = arg.kind;
  switch (kind.case) {
    case "json": {
      const payload = jsonPayload(JSON.stringify(toJson(JsonValueSchema, kind.value)), "json");
      // Small ones are shown as sent: keep the Value rather than parse the text again.
      return payload.bytes <= keepValueBytes ? { ...payload, value: kind.value } : payload;
    }
    case "jsonText": {
      try {
        JSON.parse(kind.value);
      } catch (error) {
        throw invalid(`argument ${path}: json_text is not valid JSON (${(error as Error).message}): ${quote(kind.value)}`);
      }
      return jsonPayload(kind.value, "json_text");
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

/** A child's result (or data-access value) as a payload; JSON comes as text from the SDK. */
export function payloadFromValue(value: Value | undefined, form: JsonForm): Payload {
  const kind = value?.kind;
  switch (kind?.case) {
    case "jsonText":
      return jsonPayload(kind.value, form);
    case "json":
      return jsonPayload(JSON.stringify(toJson(JsonValueSchema, kind.value)), form);
    case "bytes":
      return { kind: "bytes", data: kind.value, bytes: kind.value.byteLength };
    case "tensor":
      return { kind: "tensor", tensor: kind.value, bytes: kind.value.data.byteLength };
    default:
      return jsonPayload("null", form);
  }
}

/** The payload as the pipe protocol carries it to a child: JSON always as text. */
export function toWorkerValue(payload: Payload): Value {
  switch (payload.kind) {
    case "json":
      return create(ValueSchema, { kind: { case: "jsonText", value: payload.text } });
    case "bytes":
      return create(ValueSchema, { kind: { case: "bytes", value: payload.data } });
    case "tensor":
      return create(ValueSchema, { kind: { case: "tensor", value: payload.tensor } });
  }
}

const PREFIX_CHARS = 64;
const kinds = { json: ArgKind.JSON, json_text: ArgKind.JSON_TEXT, bytes: ArgKind.BYTES, tensor: ArgKind.TENSOR } as const;

function summaryOf(payload: Payload): ArgSummary {
  switch (payload.kind) {
    case "json":
      return create(ArgSummarySchema, { kind: kinds[payload.form], sizeBytes: BigInt(payload.bytes), prefix: payload.text.slice(0, PREFIX_CHARS) });
    case "bytes":
      return create(ArgSummarySchema, { kind: ArgKind.BYTES, sizeBytes: BigInt(payload.bytes) });
    case "tensor":
      return create(ArgSummarySchema, {
        kind: ArgKind.TENSOR,
        sizeBytes: BigInt(payload.bytes),
        dtype: payload.tensor.dtype,
        shape: payload.tensor.shape,
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
        return create(ArgSchema, { kind: { case: "jsonText", value: payload.text } });
      }
      return create(ArgSchema, { kind: { case: "json", value: payload.value ?? fromJson(JsonValueSchema, JSON.parse(payload.text) as JsonValue) } });
    case "bytes":
      return create(ArgSchema, { kind: { case: "bytes", value: payload.data } });
    case "tensor":
      return create(ArgSchema, { kind: { case: "tensor", value: payload.tensor } });
  }
}
