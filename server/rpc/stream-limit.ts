/**
 * At most `max` open streams (WatchState, WatchAction, health's Watch) per caller; an
 * anonymous caller is its address, whatever its connections: over Connect each stream is
 * a connection of its own, so a limit per connection would bound nothing.
 */
import type { Caller } from "../engine/caller.ts";
import { PlinthError } from "../errors.ts";

export interface StreamLimit {
  /** Counts a stream of `caller` (from `peer`) as open; RESOURCE_EXHAUSTED when it has `max` already. Returns what closes it. */
  open(caller: Caller, peer: string): () => void;
}

export function streamLimit(max: number): StreamLimit {
  const open = new Map<string, number>();
  return {
    open(caller, peer) {
      const who = caller.name ? `caller ${caller.name}` : `address ${hostOf(peer)}`;
      const n = open.get(who) ?? 0;
      if (n >= max) throw new PlinthError("queue_full", `${who} has ${n} open streams; server.limits.streams_per_caller allows ${max}`);
      open.set(who, n + 1);
      return () => {
        const left = (open.get(who) ?? 1) - 1;
        if (left > 0) open.set(who, left);
        else open.delete(who);
      };
    },
  };
}

/** "ipv4:127.0.0.1:5000", "[::1]:5000" or "127.0.0.1:5000" → the host alone. */
function hostOf(peer: string): string {
  return peer
    .replace(/^ipv[46]:/, "")
    .replace(/:\d+$/, "")
    .replace(/^\[|\]$/g, "");
}
