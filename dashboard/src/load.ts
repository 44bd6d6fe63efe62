/**
 * The load over the last minutes, sampled from the live state each second, from the
 * page's start: actions queued, running (taking a child: accessing data, executing,
 * storing), and ended per second. Kept here, outside the pages: a page that shows them
 * subscribes; the others are not rendered each second.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { Live } from "./api.ts";

export interface LoadSample {
  time: number;
  queued: number;
  running: number;
  /** Actions that ended in the second before. */
  ended: number;
}

/** Five minutes of seconds. */
const KEEP = 300;
const samples: LoadSample[] = [];
const listeners = new Set<() => void>();
let current: Live | undefined;

/** Where the sampler reads the live state: the latest, each time it changes. */
export function feedLoad(live: Live): void {
  current = live;
}

export function loadSamples(): readonly LoadSample[] {
  return samples;
}

export function onLoadSample(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

setInterval(() => {
  if (!current) return;
  const now = Date.now();
  let queued = 0;
  let running = 0;
  let ended = 0;
  for (const a of current.actions.values()) {
    if (a.status === ActionStatus.QUEUED) queued++;
    else if (a.status < ActionStatus.SUCCEEDED) running++;
    else if (a.endTime && timestampMs(a.endTime) > now - 1000) ended++;
  }
  samples.push({ time: now, queued, running, ended });
  if (samples.length > KEEP) samples.shift();
  for (const listener of listeners) listener();
}, 1000);
