/**
 * An action's timeline, from the times it carries: created, each data-access argument's
 * start and end, each earlier attempt's start and failure, its call's start, the
 * waits for a next attempt, and its end — in order, each with how long after the creation.
 */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { ended, STATUS, when } from "./format.ts";

interface TimelineEvent {
  time: number;
  /** Among events of the same millisecond, which comes first. */
  rank: number;
  at: Timestamp;
  what: string;
  failed?: boolean;
}

export function Timeline({ action: a }: { action: Action }) {
  const events: TimelineEvent[] = [];
  const add = (rank: number, at: Timestamp | undefined, what: string, failed = false) => {
    if (at) events.push({ time: timestampMs(at), rank, at, what, failed });
  };
  add(0, a.createTime, "created, queued");
  for (const t of a.attempts) {
    add(1, t.startTime, `attempt ${t.attempt} started${t.server ? ` on ${t.server}` : ""}`);
    add(2, t.endTime, `attempt ${t.attempt} failed: ${t.error?.code}`, true);
  }
  // Its start: out of its model's queue, its data access to come.
  add(3, a.startTime, a.attempts.length ? `attempt ${a.attempt || 1} started` : "started");
  for (const d of a.dataAccess) {
    add(4, d.startTime, `${d.argument} ← @${d.name} started`);
    add(5, d.endTime, `${d.argument} ← @${d.name} ${STATUS[d.status]}${d.error ? `: ${d.error.code}` : ""}`, d.error !== undefined);
  }
  if (a.nextAttemptTime && !ended(a)) add(6, a.nextAttemptTime, `attempt ${a.attempt || 1} due`);
  if (ended(a)) add(7, a.endTime, `${STATUS[a.status]}${a.error ? `: ${a.error.code}` : ""}`, a.error !== undefined);
  events.sort((x, y) => x.time - y.time || x.rank - y.rank);
  const origin = events[0]?.time ?? 0;
  return (
    <ol class="timeline" data-testid="timeline">
      {events.map((e) => (
        <li key={`${e.time}-${e.what}`} class={e.failed ? "error" : ""} data-what={e.what}>
          <span class="num">+{((e.time - origin) / 1000).toFixed(3)} s</span> {e.what} <span class="muted">{when(e.at)}</span>
        </li>
      ))}
    </ol>
  );
}
