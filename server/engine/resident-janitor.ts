/**
 * Keeps the children from holding instances no call will ask for again: once a model's
 * revision r is published, its other revisions are forgotten; once the model is deleted,
 * all of them. It follows the published state, so it sees a cluster's changes (the
 * feed's) as well as this server's.
 *
 * Safe because changes to a model are exclusive: once r is published, no call on an
 * earlier revision is in flight, and none will start.
 */
import type { PluginCalls } from "./action-run.ts";
import type { StatePublisher } from "./state-publisher.ts";

/** Subscribes to `publisher`; returns the unsubscribe. */
export function forgetSuperseded(publisher: StatePublisher, processes: Pick<PluginCalls, "forget">): () => void {
  return publisher.subscribe((event) => {
    if (event.kind === "model_upserted") processes.forget(event.model.id, event.model.revision);
    else if (event.kind === "model_deleted") processes.forget(event.modelId);
  });
}
