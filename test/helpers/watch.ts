/** Waiting on the server's own events (WatchState), never on sleeps. */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import type { TestServer } from "./server.ts";

/** Live actions by id, as a WatchState client sees them. */
export type ActionView = Map<string, Action>;

/**
 * Follows WatchState until `until` holds for the actions seen so far, and returns
 * that view. Fails after timeoutMs with what it saw.
 */
export async function watchActions(t: TestServer, until: (actions: ActionView) => boolean, timeoutMs = 60_000): Promise<ActionView> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const view: ActionView = new Map();
  try {
    for await (const message of t.state.watchState({}, { signal: controller.signal })) {
      const event = message.event;
      if (event.case === "snapshot") for (const a of event.value.actions) view.set(a.id, a);
      if (event.case === "actionUpserted") view.set(event.value.id, event.value);
      if (until(view)) return view;
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  const seen = [...view.values()].map((a) => `${a.id}: ${a.status}`).join(", ");
  throw new Error(`condition not met within ${timeoutMs} ms; actions seen: ${seen}`);
}
