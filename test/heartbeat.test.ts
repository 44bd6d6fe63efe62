/**
 * plugins[].heartbeat_timeout: a call that neither reports progress nor calls
 * ctx.heartbeat() for that long is stopped and fails stalled; one that heartbeats or
 * reports runs on; calls of a kind the timeout does not name have none.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";

// Well above what a busy machine delays a heartbeat by; the calls that live run twice as long.
const TIMEOUT = 3;

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    backend: { kind: "memory" },
    engine: { max_children: 3 },
    plugins: [{ module: fixture("silent.ts"), heartbeat_timeout: { fit: TIMEOUT } }],
  });
});
afterAll(() => t?.close());

const create = async () => (await t.engine.createInstance({ modelType: "silent.Model", wait: true })).action!.modelId;

describe("plugins[].heartbeat_timeout", () => {
  it("stops a fit that says nothing for that long: it fails stalled, naming the key, and its model stays as it was", async () => {
    const modelId = await create();
    const fit = (await t.engine.fit({ modelId, kwargs: { seconds: json(20) }, wait: true })).action!;
    expect(fit.status).toBe(ActionStatus.FAILED);
    expect(fit.error).toMatchObject({
      code: "stalled",
      message: `fit of silent.Model neither reported progress nor called ctx.heartbeat() for ${TIMEOUT} s (plugins[0].heartbeat_timeout): stopped`,
    });
    expect((await t.engine.getModel({ modelId })).model!.revision).toBe(1n);
  });

  it("lets a fit that heartbeats, or reports progress, run past it; a predict (not named) has no timeout", async () => {
    const [a, b, c] = [await create(), await create(), await create()];
    const seconds = json(2 * TIMEOUT);
    const ended = await Promise.all([
      t.engine.fit({ modelId: a, kwargs: { seconds, beat: json(true) }, wait: true }),
      t.engine.fit({ modelId: b, kwargs: { seconds, report: json(true) }, wait: true }),
      t.engine.predict({ modelId: c, args: [seconds], wait: true }),
    ]);
    expect(ended.map((r) => `${ActionStatus[r.action!.status]} ${r.action!.error?.message ?? ""}`)).toEqual(Array(3).fill("SUCCEEDED "));
  });
});
