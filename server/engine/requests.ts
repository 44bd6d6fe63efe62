/**
 * A request's fields as the engine takes them: checked (a clear INVALID_ARGUMENT naming
 * the field) and converted — timeouts, revisions, ids, pages, the JSON form, and the
 * whole request as a cluster's queue keeps it.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Duration, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import { JsonForm, PredictRequestSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { invalid, quote } from "../errors.ts";
import { type ArgLimits, type ParsedArgs, parseArgs } from "./args.ts";
import type { JsonForm as PayloadForm } from "./payloads.ts";
import { argsView } from "./views.ts";

/** The form a JSON prediction takes: as asked, else json_text when an argument was. */
export function jsonFormOf(request: { args: Arg[]; kwargs: Record<string, Arg>; jsonForm?: JsonForm }): PayloadForm {
  if (request.jsonForm === JsonForm.VALUE) return "json";
  if (request.jsonForm === JsonForm.TEXT) return "json_text";
  const text = (arg: Arg) => arg.kind.case === "jsonText";
  return request.args.some(text) || Object.values(request.kwargs).some(text) ? "json_text" : "json";
}

/** How long ago the action was created, in ms. */
export function elapsedMs(view: Action): number {
  return view.createTime ? Date.now() - timestampMs(view.createTime) : 0;
}

/** The whole request, as kept for a takeover: a PredictRequest's encoding of the arguments and their JSON form. */
export function requestBytes(parsed: ParsedArgs, form: PayloadForm, maxJsonValueBytes: number): Uint8Array {
  return toBinary(
    PredictRequestSchema,
    create(PredictRequestSchema, {
      ...argsView(parsed, Infinity, maxJsonValueBytes),
      jsonForm: form === "json_text" ? JsonForm.TEXT : JsonForm.VALUE,
    }),
  );
}

/** A request requestBytes kept, parsed again (by the server that runs the action's next attempt). */
export function parseRequest(
  bytes: Uint8Array,
  views: { inlineBytes: number },
  limits: Omit<ArgLimits, "keepValueBytes">,
  isDataAccess: (name: string) => boolean,
): { parsed: ParsedArgs; jsonForm: PayloadForm } {
  const request = fromBinary(PredictRequestSchema, bytes);
  const parsed = parseArgs(request.args, request.kwargs, { ...limits, keepValueBytes: views.inlineBytes }, isDataAccess);
  return { parsed, jsonForm: jsonFormOf(request) };
}

/** Protobuf's Duration: seconds within ±10,000 years, nanos within ±1e9 of the same sign. */
export function timeoutMillis(timeout: Duration): number {
  const { seconds, nanos } = timeout;
  if (
    seconds < -315_576_000_000n ||
    seconds > 315_576_000_000n ||
    nanos <= -1e9 ||
    nanos >= 1e9 ||
    (seconds > 0n && nanos < 0) ||
    (seconds < 0n && nanos > 0)
  ) {
    throw invalid(`timeout: not a valid google.protobuf.Duration (seconds ${seconds}, nanos ${nanos}); e.g. "30s" or {"seconds": 30}`);
  }
  const ms = Number(seconds) * 1000 + nanos / 1e6;
  if (!(ms >= 1) || ms > 2 ** 31 - 1) throw invalid(`timeout: must be between 1 ms and 24 days, got ${ms} ms`);
  return ms;
}

/** Revisions are uint64 on the wire; the store and the state hold them as signed 64-bit. */
export function checkRevision(field: string, revision: bigint): void {
  if (revision >= 2n ** 63n) throw invalid(`${field}: must be below 2^63, got ${revision}`);
}

export function requireId(field: string, value: string): void {
  if (!value) throw invalid(`${field} is required`);
}

export function pageSize(requested: number): number {
  if (requested > 1000) throw invalid(`page_size: at most 1000, got ${requested}`);
  return requested || 100;
}

/**
 * A ListModels or ListActions page token: the id of the last model or action of the page
 * before. A token that is not such an id is refused, not read as "no more results".
 */
export function listToken(token: string, prefix: "m" | "a", method: string): string | undefined {
  if (!token) return undefined;
  if (!new RegExp(`^${prefix}-[0-9a-z]{12,64}$`).test(token)) throw invalid(`page_token: not one ${method} returned: ${quote(token)}`);
  return token;
}

export function parseStateToken(token: string): ["m" | "a", string] {
  if (!token) return ["m", ""];
  const match = /^([ma]):(.{1,200})$/.exec(token);
  if (!match) throw invalid(`page_token: not one GetState returned: ${quote(token)}`);
  return [match[1] as "m" | "a", match[2]!];
}
