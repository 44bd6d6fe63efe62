/** A CPU-bound plugin's progress and cancel, on either runtime (the portable fixture). */
import { expect } from "vitest";
import { ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { json, stateOf } from "./args.ts";
import type { TestServer } from "./server.ts";

/** A synchronous loop that only reports and checks ctx.signal: it must report as it runs and stop at once on cancel. */
export async function expectSpinReportsAndStops(t: TestServer): Promise<void> {
  const modelId = (await t.engine.createInstance({ modelType: "portable.Model", wait: true })).action!.modelId;
  const { action } = await t.engine.predict({ modelId, args: [json("spin")], kwargs: { seconds: json(60) } });
  const seen: number[] = [];
  for await (const update of t.actions.watchAction({ actionId: action!.id })) {
    const state = stateOf(update.action!.state) as { at?: number } | null;
    if (state?.at) seen.push(performance.now());
    if (seen.length >= 15) break;
  }
  // About one update per 50 ms while the loop never yields: no gap near the old "nothing until it ends".
  const gaps = seen.slice(1).map((at, i) => at - seen[i]!);
  expect(Math.max(...gaps)).toBeLessThan(1000);
  const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
  expect(cancelled.status).toBe(ActionStatus.CANCELLED);
  // The plugin saw the cancel in its loop and stopped: no SIGKILL, far inside sigterm_timeout (5 s).
  expect(cancelled.cancel?.forced).toBe(false);
  const stopMs = Number(cancelled.cancel!.stopDuration!.seconds) * 1000 + cancelled.cancel!.stopDuration!.nanos / 1e6;
  expect(stopMs).toBeLessThan(1000);
}
