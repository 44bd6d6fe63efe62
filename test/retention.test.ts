/** What the live state keeps of ended actions (count, age), and how much output an action keeps. */
import { afterEach, describe, expect, it } from "vitest";
import { ActionCall, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";

let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(engine: Record<string, unknown>) {
  t = await startTestServer({ engine, plugins: [{ module: fixture("misbehave.ts") }] });
  const modelId = (await t.engine.createInstance({ modelType: "misbehave.Model", wait: true })).action!.modelId;
  return { t, modelId };
}

const livePredicts = async (t: TestServer) =>
  (await t.state.getState({})).state!.actions.filter((a) => a.call === ActionCall.PREDICT).map((a) => a.id);

describe("ended actions in the live state", () => {
  it("at most engine.retain_actions of them, the latest; the history keeps them all", async () => {
    const { t, modelId } = await start({ retain_actions: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await t.engine.predict({ modelId, wait: true })).action!.id);
    expect(await livePredicts(t)).toEqual(ids.slice(2));
    const history = (await t.actions.listActions({ modelId })).actions.filter((a) => a.call === ActionCall.PREDICT);
    expect(history.map((a) => a.id)).toEqual([...ids].reverse());
    expect((await t.actions.getAction({ actionId: ids[0]! })).action!.status).toBe(ActionStatus.SUCCEEDED);
  });

  it("for at most engine.retain_actions_seconds", async () => {
    const { t, modelId } = await start({ retain_actions_seconds: 0.3 });
    const first = (await t.engine.predict({ modelId, wait: true })).action!.id;
    expect(await livePredicts(t)).toEqual([first]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const second = (await t.engine.predict({ modelId, wait: true })).action!.id;
    expect(await livePredicts(t)).toEqual([second]);
  });
});

describe("engine.log_tail_lines", () => {
  it("keeps the last lines a plugin printed, no more", async () => {
    const { t, modelId } = await start({ log_tail_lines: 2 });
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("print") }, wait: true })).action!;
    expect(action.logTail).toEqual(["written to process.stdout", "info line"]);
  });
});
