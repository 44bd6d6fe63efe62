/**
 * The throttle behind `report`: a call's (ctx.report) and each batch item's (item.report).
 * @module
 */
import type { JsonValue } from "../values.ts";

/** @internal */
export interface Progress {
  /** Keeps `state` as the latest; sends it at once if one is due, else when the interval has passed. */
  report(state: JsonValue): void;
  /** Sends the latest state now, if one waits. */
  flush(): void;
  /** Flushes, then drops whatever is reported after: the call has answered. */
  close(): void;
}

/**
 * Sends only the latest of a stream of reports, at most one per `intervalMs`, the first
 * at once: a synchronous loop's reports go out as it runs, and a flood costs nothing.
 * @internal
 */
export function progressThrottle(intervalMs: number, send: (state: JsonValue) => void): Progress {
  let latest: { state: JsonValue } | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastSent = -Infinity;
  let closed = false;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (!latest) return;
    const { state } = latest;
    latest = undefined;
    lastSent = performance.now();
    send(state);
  };
  return {
    report(state) {
      if (closed) return;
      latest = { state };
      // Due now: send at once, so that a synchronous loop's reports go out as it runs.
      const wait = lastSent + intervalMs - performance.now();
      if (wait <= 0) flush();
      else timer ??= setTimeout(flush, wait);
    },
    flush,
    close() {
      flush();
      closed = true;
    },
  };
}

/** Heartbeats sent at most this often: enough for any timeout of a second or more. */
const HEARTBEAT_EVERY_MS = 200;

/**
 * The throttle behind `heartbeat`: the first at once, then at most one per
 * HEARTBEAT_EVERY_MS; none once the call has answered. @internal
 */
export function heartbeatThrottle(send: () => void): { beat(): void; close(): void } {
  let last = -Infinity;
  let closed = false;
  return {
    beat() {
      const now = performance.now();
      if (closed || now - last < HEARTBEAT_EVERY_MS) return;
      last = now;
      send();
    },
    close() {
      closed = true;
    },
  };
}
