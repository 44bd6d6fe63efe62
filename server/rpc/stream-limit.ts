/** At most `max` open streams (WatchState, WatchAction, health's Watch) per caller, or per connection when anonymous. */
import type { ServerMiddleware } from "nice-grpc";
import type { Caller } from "../engine/caller.ts";
import { PlinthError } from "../errors.ts";

export function streamLimit(max: number): ServerMiddleware<object, { caller: Caller }> {
  const open = new Map<string, number>();
  return async function* limitStreams(call, context) {
    if (!call.responseStream) return yield* call.next(call.request, context);
    const who = context.caller.name ? `caller ${context.caller.name}` : `connection ${context.peer}`;
    const n = open.get(who) ?? 0;
    if (n >= max) throw new PlinthError("queue_full", `${who} has ${n} open streams; server.limits.streams_per_caller allows ${max}`);
    open.set(who, n + 1);
    try {
      return yield* call.next(call.request, context);
    } finally {
      const left = (open.get(who) ?? 1) - 1;
      if (left > 0) open.set(who, left);
      else open.delete(who);
    }
  };
}
