/** How the dashboard writes what the API says: statuses, calls, values, times. */
import { type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgKind, type ArgSummary, DType } from "../../gen/plinth/v1/arg_pb.ts";

/** By ActionStatus: the words people read, and the names the URL's filters use. */
export const STATUS = ["", "queued", "accessing data", "executing", "storing", "succeeded", "failed", "cancelled"];
export const STATUS_KEYS = ["", "queued", "accessing_data", "executing", "storing", "succeeded", "failed", "cancelled"];
/** By ActionCall. */
export const CALL = ["", "create", "fit", "predict"];

export const ended = (a: Action) => a.status >= ActionStatus.SUCCEEDED;
export const json = (v: Parameters<typeof toJson>[1] | undefined) => (v ? (toJson(ValueSchema, v as never) as JsonValue) : undefined);

/** 0–1 from the plugin's report: `progress`, or `done`/`total`. */
export function fraction(state: JsonValue | undefined): number | undefined {
  if (!state || typeof state !== "object" || Array.isArray(state)) return undefined;
  const { progress, done, total } = state as Record<string, JsonValue>;
  if (typeof progress === "number") return Math.min(1, Math.max(0, progress));
  if (typeof done === "number" && typeof total === "number" && total > 0) return Math.min(1, done / total);
  return undefined;
}

/** When an action's duration counts from (ms): its start, or its creation while it waits. */
export const startedAt = (a: Action) => timestampMs((a.startTime ?? a.createTime)!);

/** From the action's start (its creation while it waited) to its end, or to now. */
export function duration(a: Action, now: number): string {
  return since(startedAt(a), a.endTime ? timestampMs(a.endTime) : now);
}

/** The time from one moment to another (ms), as people read it. */
export function since(from: number, to: number): string {
  const s = (to - from) / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${(s / 3600).toFixed(1)} h`;
}

/** A time as people read it here: today's as its time, an older one with its date. */
export function when(t: Timestamp | undefined): string {
  if (!t) return "";
  const date = new Date(timestampMs(t));
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

/** What a summarized argument is, before its size: "tensor float32 4×2, ", "list of 3, ". */
function summaryKind(s: ArgSummary): string {
  if (s.kind === ArgKind.TENSOR) return `tensor ${DType[s.dtype]?.toLowerCase()} ${s.shape.join("×")}, `;
  if (s.kind === ArgKind.LIST || s.kind === ArgKind.MAP) return `${s.kind === ArgKind.LIST ? "list" : "map"} of ${s.items}, `;
  if (s.kind === ArgKind.BYTES) return "bytes, ";
  return "";
}

export function argText(arg: Arg): string {
  const k = arg.kind;
  if (k.case === "json") return JSON.stringify(json(k.value));
  if (k.case === "jsonText") return k.value;
  if (k.case === "summary") return `(${summaryKind(k.value)}${k.value.sizeBytes} bytes${k.value.prefix ? `: ${k.value.prefix}…` : ""})`;
  if (k.case === "bytes") return `(${k.value.byteLength} bytes)`;
  if (k.case === "tensor") return `(tensor ${k.value.shape.join("×")})`;
  if (k.case === "dataAccess") return `@${k.value.name}`;
  if (k.case === "list") return `[${k.value.items.map(argText).join(", ")}]`;
  if (k.case === "map") {
    return `{${Object.entries(k.value.entries)
      .map(([key, v]) => `${key}: ${argText(v)}`)
      .join(", ")}}`;
  }
  return "";
}
