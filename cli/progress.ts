/**
 * Following an action in a terminal: a bar for the action and one per data-access
 * argument, from the plugin's reports — a numeric `progress` (0–1) or `done`/`total` —
 * or its latest state as text when it reports neither. Not on a TTY: one plain line per
 * change of status, on stderr, so that stdout keeps only the result.
 */
import cliProgress from "cli-progress";
import type { Progress, Status } from "../client/mod.ts";
import type { JsonValue } from "../sdk/mod.ts";

/** 0–1 from a report, when it says how far along it is. */
export function fractionOf(state: JsonValue | undefined): number | undefined {
  if (!state || typeof state !== "object" || Array.isArray(state)) return undefined;
  const { progress, done, total } = state as Record<string, JsonValue>;
  if (typeof progress === "number" && Number.isFinite(progress)) return Math.min(1, Math.max(0, progress));
  if (typeof done === "number" && typeof total === "number" && total > 0) return Math.min(1, Math.max(0, done / total));
  return undefined;
}

function describe(status: Status, state: JsonValue | undefined): string {
  if (state === undefined || fractionOf(state) !== undefined) return status;
  const text = JSON.stringify(state);
  return `${status} ${text.length > 60 ? `${text.slice(0, 57)}...` : text}`;
}

export interface Follower {
  update(p: Progress): void;
  /** Removes the bars (before the result is printed, or a question asked). */
  stop(): void;
}

export function follower(id: string, tty: boolean): Follower {
  if (!tty) {
    let last = "";
    return {
      update(p) {
        const line = `${id} ${p.status}${p.dataAccess.length ? ` (data: ${p.dataAccess.map((d) => `${d.argument} ${d.status}`).join(", ")})` : ""}`;
        if (line !== last) process.stderr.write(`${line}\n`);
        last = line;
      },
      stop() {},
    };
  }
  const bars = new cliProgress.MultiBar(
    // The last frame stays on screen (100 % when the action succeeded), the result below it.
    { format: " {bar} {percentage}% | {label}", hideCursor: true, clearOnComplete: false, stopOnComplete: false, barsize: 30, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
  const main = bars.create(100, 0, { label: `${id} queued` });
  const data = new Map<string, cliProgress.SingleBar>();
  let stopped = false;
  return {
    update(p) {
      if (stopped) return;
      const fraction = fractionOf(p.state) ?? (p.status === "succeeded" ? 1 : undefined);
      const queued = p.status === "queued" && p.queuePosition ? ` (position ${p.queuePosition})` : "";
      main.update(fraction === undefined ? 0 : Math.round(fraction * 100), { label: `${id} ${describe(p.status, p.state)}${queued}` });
      for (const d of p.dataAccess) {
        let bar = data.get(d.argument);
        if (!bar) {
          bar = bars.create(100, 0, { label: "" });
          data.set(d.argument, bar);
        }
        const f = fractionOf(d.state) ?? (d.status === "succeeded" ? 1 : undefined);
        bar.update(f === undefined ? 0 : Math.round(f * 100), { label: `${d.argument} ← ${d.name}: ${describe(d.status, d.state)}` });
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bars.stop();
    },
  };
}
