/**
 * What the command line prints: `--output table` for people (the default), `json` and
 * `yaml` for programs — proto3 JSON of the messages, stable across releases.
 */
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { stringify } from "yaml";
import { statusName } from "../client/action-run.ts";
import { type Action, ActionSchema } from "../gen/plinth/v1/action_pb.ts";
import { type Model, ModelSchema } from "../gen/plinth/v1/model_pb.ts";

export type Format = "table" | "json" | "yaml";

/** Writes `value` (plain JSON) as the format asks; `table` uses `human` when given. */
export function print(format: Format, value: unknown, human?: () => string): void {
  if (format === "json") process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  else if (format === "yaml") process.stdout.write(stringify(value));
  else process.stdout.write(`${human ? human() : JSON.stringify(value, null, 2)}\n`);
}

export const json = <S extends DescMessage>(schema: S, message: MessageShape<S>) => toJson(schema, message, { alwaysEmitImplicit: false });
export const actionJson = (action: Action) => json(ActionSchema, action);
export const modelJson = (model: Model) => json(ModelSchema, model);

/** Columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

const time = (t: { seconds: bigint; nanos: number } | undefined) =>
  t ? new Date(Number(t.seconds) * 1000 + t.nanos / 1e6).toISOString().replace("T", " ").slice(0, 19) : "";

export function modelsTable(models: Model[]): string {
  return table(
    ["ID", "TYPE", "REVISION", "SIZE", "UPDATED"],
    models.map((m) => [m.id, m.modelType, String(m.revision), `${m.instanceSize} B`, time(m.updateTime)]),
  );
}

export function actionsTable(actions: Action[]): string {
  return table(
    ["ID", "CALL", "MODEL", "STATUS", "PRI", "TRY", "CREATED", "BY", "ERROR"],
    actions.map((a) => [
      a.id,
      callName(a),
      a.modelId || a.modelType,
      statusName(a.status),
      String(a.priority || 3),
      a.retry ? `${a.attempt || 1}/${a.retry.maxAttempts}` : "",
      time(a.createTime),
      a.createdBy,
      a.error ? `${a.error.code}: ${a.error.message}`.slice(0, 60) : "",
    ]),
  );
}

export function callName(action: Action): string {
  return ["", "create", "fit", "predict"][action.call] ?? "";
}

/** One action, for people: its fields, state, result or error, and its log tail. */
export function actionText(action: Action, result?: string): string {
  const lines = [
    `action   ${action.id}`,
    `call     ${callName(action)} ${action.modelType}${action.modelId ? ` on ${action.modelId}` : ""}`,
    `status   ${statusName(action.status)}${action.queuePosition ? ` (position ${action.queuePosition} in the queue)` : ""}`,
    `created  ${time(action.createTime)}${action.createdBy ? ` by ${action.createdBy}` : ""}`,
    `priority ${action.priority || 3}`,
  ];
  if (action.redacted) lines.push("shown    in summary: another caller's action (the server's server.auth.visibility)");
  if (action.retry) {
    const next = action.nextAttemptTime ? `, the next at ${time(action.nextAttemptTime)}` : "";
    lines.push(`attempt  ${action.attempt || 1} of ${action.retry.maxAttempts}${next}`);
  }
  for (const a of action.attempts)
    lines.push(`failed   attempt ${a.attempt}${a.server ? ` on ${a.server}` : ""}: ${a.error?.code}: ${a.error?.message}`);
  if (action.checkpoint) {
    const { attempt, size, value } = action.checkpoint;
    const shown = value?.kind.case === "json" ? ` ${JSON.stringify(toJson(ValueSchema, value.kind.value))}` : "";
    lines.push(`checkpoint ${size} B from attempt ${attempt} at ${time(action.checkpoint.time)}${shown}`);
  }
  if (action.server) lines.push(`server   ${action.server}`);
  if (action.endTime) lines.push(`ended    ${time(action.endTime)}`);
  for (const d of action.dataAccess) lines.push(`data     ${d.argument} ← ${d.name}: ${statusName(d.status)}`);
  if (action.state) lines.push(`state    ${JSON.stringify(toJson(ValueSchema, action.state))}`);
  if (action.result?.model) lines.push(`model    ${action.result.model.id} revision ${action.result.model.revision}`);
  if (result !== undefined) lines.push(`result   ${result}`);
  if (action.error) lines.push(`error    ${action.error.code}: ${action.error.message}`);
  if (action.cancel) lines.push(`cancel   by ${action.cancel.by}${action.cancel.cancelledBy ? ` (${action.cancel.cancelledBy})` : ""}`);
  if (action.error?.stack) lines.push("", action.error.stack);
  if (action.logTail.length) lines.push("", "log:", ...action.logTail.map((l) => `  ${l}`));
  return lines.join("\n");
}
