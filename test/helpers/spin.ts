/** A CPU-bound plugin's progress and cancel, on either runtime (the portable fixture). */
import { expect } from "vitest";
import { ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { json, stateOf } from "./args.ts";
import type { TestServer } from "./server.ts";

/** A synchronous loop that only reports and checks ctx.signal: it must report as it runs and stop at once on cancel. */
export async function expectSpinReportsAndStops(t: TestServer): Promise<void> {
  const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
  const { action } = await t.engine.predict({ modelId, args: [json("spin")], kwargs: { seconds: json(60) } });
  // Reports taken at different moments of the loop (the plugin's clock), delivered while
  // the 60-second loop still runs: not the old "nothing until it ends".
  const seen = new Set<number>();
  for await (const update of t.actions.watchAction({ actionId: action!.id })) {
    const state = stateOf(update.action!.state) as { at?: number } | null;
    if (state?.at) seen.add(state.at);
    if (seen.size >= 15) break;
  }
  expect(seen.size).toBe(15);
  const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
  expect(cancelled.status).toBe(ActionStatus.CANCELLED);
  // The plugin saw the cancel in its loop and stopped: its child exited by itself, no SIGKILL
  // (the callers' sigterm_timeout is far above a busy machine's delays).
  expect(cancelled.cancel).toMatchObject({ phase: ActionStatus.EXECUTING, forced: false });
}
