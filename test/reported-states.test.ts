/**
 * An action's reported states over time (Action.states): a fit's loss each epoch, in
 * GetAction's and WaitAction's answers while it runs and once it ended, kept in the
 * history across a restart, and never in the streams (BASIC).
 */
import { join } from "node:path";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { afterEach, describe, expect, it } from "vitest";
import { type Action, ActionStatus, ActionView } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

let running: TestServer[] = [];
afterEach(async () => {
  for (const t of running) await t.close();
  running = [];
});

async function server(path: string): Promise<TestServer> {
  const t = await startTestServer({ backend: { path }, plugins: [{ module: fixture("curve.ts") }] });
  running.push(t);
  return t;
}

const epochs = (a: Action) => a.states.map((p) => (toJson(ValueSchema, p.state!) as { epoch: number }).epoch);
const losses = (a: Action) => a.states.map((p) => (toJson(ValueSchema, p.state!) as { loss: number }).loss);

describe("an action's reported states", () => {
  it("are in GetAction while it runs and once it ended, in order with their times, kept across a restart, and not in the streams", async () => {
    const path = join(tempDir("plinth-states-"), "plinth.db");
    const t = await server(path);
    const modelId = (await t.engine.createInstance({ modelType: "curve.Model", wait: true })).action!.modelId;
    const fit = (await t.engine.fit({ modelId, kwargs: { epochs: json(12), epoch_ms: json(40) } })).action!;
    // While it runs: the epochs so far.
    let streamed = 0;
    for await (const u of t.actions.watchAction({ actionId: fit.id })) {
      expect(u.action!.states).toEqual([]);
      streamed++;
      const state = u.action!.state && (toJson(ValueSchema, u.action!.state) as { epoch?: number } | null);
      const so = state?.epoch ?? 0;
      if (so >= 3) break;
    }
    const midway = (await t.actions.getAction({ actionId: fit.id })).action!;
    expect(midway.status).toBe(ActionStatus.EXECUTING);
    expect(epochs(midway).length).toBeGreaterThanOrEqual(3);
    expect(epochs(midway)).toEqual([...epochs(midway)].sort((a, b) => a - b));
    expect(streamed).toBeGreaterThan(0);

    const ended = (await t.actions.waitAction({ actionId: fit.id })).action!;
    expect(ended.status).toBe(ActionStatus.SUCCEEDED);
    // Each report coalesced to the progress interval at most: the last epoch is there, the order kept.
    expect(epochs(ended).at(-1)).toBe(12);
    expect(losses(ended).at(-1)).toBeCloseTo(1 / 12);
    expect(epochs(ended)).toEqual([...new Set(epochs(ended))].sort((a, b) => a - b));
    const times = ended.states.map((p) => Number(p.time!.seconds) * 1e3 + p.time!.nanos / 1e6);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect((await t.actions.getAction({ actionId: fit.id, view: ActionView.BASIC })).action!.states).toEqual([]);
    expect((await t.actions.listActions({ modelId })).actions.every((a) => a.states.length === 0)).toBe(true);

    // From the history after a restart: the same states.
    await t.close();
    running = [];
    const again = await server(path);
    const stored = (await again.actions.getAction({ actionId: fit.id })).action!;
    expect(epochs(stored)).toEqual(epochs(ended));
    expect((await again.actions.getAction({ actionId: fit.id, view: ActionView.BASIC })).action!.states).toEqual([]);
    const listedFull = (await again.actions.listActions({ modelId, view: ActionView.FULL })).actions.find((a) => a.id === fit.id)!;
    expect(epochs(listedFull)).toEqual(epochs(ended));
  });
});
