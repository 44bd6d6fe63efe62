/**
 * `plinth watch`: the actions that run and those that ended recently, live, like `top`:
 * one WatchState stream (snapshot, then every change), redrawn at most ten times a second.
 * Not on a TTY (or with --once) it prints the table once per change of an action's
 * status — or once, with --once — instead of redrawing.
 */
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { isEnded, statusName } from "../client/action-run.ts";
import type { PlinthClient } from "../client/mod.ts";
import type { Action } from "../gen/plinth/v1/action_pb.ts";
import type { JsonValue } from "../sdk/mod.ts";
import { callName, table } from "./output.ts";
import { fractionOf } from "./progress.ts";

const REDRAW_MS = 100;

function bar(fraction: number | undefined, width = 20): string {
  if (fraction === undefined) return "";
  const full = Math.round(fraction * width);
  return `${"█".repeat(full)}${"░".repeat(width - full)} ${Math.round(fraction * 100)}%`;
}

function seconds(action: Action, now: number): string {
  const ms = (t: Action["createTime"]) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : now);
  const from = ms(action.startTime ?? action.createTime);
  return `${((ms(action.endTime) - from) / 1000).toFixed(1)} s`;
}

/** The table: running and queued first (oldest first), then the recently ended, newest first. */
export function watchTable(actions: Iterable<Action>, limit: number, now = Date.now()): string {
  const all = [...actions];
  const live = all.filter((a) => !isEnded(a)).sort((a, b) => a.id.localeCompare(b.id));
  const ended = all.filter(isEnded).sort((a, b) => b.id.localeCompare(a.id));
  const rows = [...live, ...ended].slice(0, limit).map((a) => {
    const state = a.state ? (toJson(ValueSchema, a.state) as JsonValue) : undefined;
    const data = a.dataAccess.length ? ` data ${a.dataAccess.filter((d) => statusName(d.status) === "succeeded").length}/${a.dataAccess.length}` : "";
    return [
      a.id,
      callName(a),
      a.modelId || a.modelType,
      `${statusName(a.status)}${a.queuePosition ? ` #${a.queuePosition}` : ""}`,
      `${bar(fractionOf(state))}${data}`,
      seconds(a, now),
      a.error?.code ?? "",
    ];
  });
  return table(["ID", "CALL", "MODEL", "STATUS", "PROGRESS", "TIME", "ERROR"], rows);
}

export async function watch(client: PlinthClient, options: { once: boolean; limit: number; tty: boolean; signal: AbortSignal }): Promise<void> {
  const actions = new Map<string, Action>();
  let dirty = false;
  let printedStatuses = "";
  const draw = () => {
    dirty = false;
    const text = watchTable(actions.values(), options.limit);
    if (options.tty) process.stdout.write(`\u001b[H\u001b[2J${text}\n`);
    else {
      // Piped: a new table only when some action's status changed.
      const statuses = [...actions.values()].map((a) => `${a.id}:${a.status}`).join(",");
      if (statuses === printedStatuses) return;
      printedStatuses = statuses;
      process.stdout.write(`${text}\n\n`);
    }
  };
  const timer = setInterval(() => dirty && draw(), REDRAW_MS);
  try {
    for await (const message of client.state.watchState({}, { signal: options.signal })) {
      const event = message.event;
      if (event.case === "snapshot") {
        if (!message.more) actions.clear();
        for (const a of event.value.actions) actions.set(a.id, a);
        if (message.more) continue;
        draw();
        if (options.once) return;
      } else if (event.case === "actionUpserted") {
        actions.set(event.value.id, event.value);
        dirty = true;
      }
    }
  } catch (error) {
    if (!options.signal.aborted) throw error;
  } finally {
    clearInterval(timer);
  }
}
