/**
 * Priorities and fairness on a real server: one child, a long call holding it, a backlog
 * of priority-5 calls from two callers (bearer tokens), then a priority-1 call. The order
 * the calls start in is read from the engine's own events (every status change, none
 * coalesced), never from times.
 */
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { clientsOf, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

const token = (name: string) => `${name}-${randomBytes(16).toString("hex")}`;
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const tokens = { x: token("x"), y: token("y"), ops: token("ops") };

let running: TestServer | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

describe("priorities", () => {
  it("with max_children 1 and 100 priority-5 calls queued, a priority-1 call runs next; two callers' calls interleave", async () => {
    const t = await startTestServer({
      engine: { max_children: 1 },
      plugins: [{ module: join(root, "plugins/system-test/mod.ts") }],
      server: {
        auth: {
          tokens: [
            { name: "x", sha256: sha256(tokens.x), roles: ["run"] },
            { name: "y", sha256: sha256(tokens.y), roles: ["run"] },
            { name: "ops", sha256: sha256(tokens.ops), roles: ["admin"] },
          ],
        },
      },
    });
    running = t;
    const x = clientsOf(t.channel, tokens.x);
    const y = clientsOf(t.channel, tokens.y);
    // The order the actions start running in, as the engine changes them.
    const started: string[] = [];
    const ended = new Set<string>();
    let onEnd = () => {};
    const unsubscribe = t.server.engine.subscribe((event) => {
      if (event.kind !== "action_upserted") return;
      const { id, status } = event.action;
      if (status === ActionStatus.EXECUTING && !started.includes(id)) started.push(id);
      if (status === ActionStatus.SUCCEEDED || status === ActionStatus.CANCELLED) {
        ended.add(id);
        onEnd();
      }
    });
    try {
      const create = async (c: typeof x, priority: number, kwargs = {}) =>
        (await c.engine.createInstance({ modelType: "systest.Model", kwargs, priority })).action!.id;
      // A long call holds the only child until it is cancelled.
      const hold = await create(x, 0, { sleep: json(600) });
      for await (const { action } of x.actions.watchAction({ actionId: hold })) if (action!.status === ActionStatus.EXECUTING) break;

      const fromX: string[] = [];
      for (let i = 0; i < 100; i++) fromX.push(await create(x, 5));
      const fromY = [await create(y, 5), await create(y, 5)];
      const urgent = await create(y, 1);
      expect((await y.actions.getAction({ actionId: urgent })).action).toMatchObject({ priority: 1, queuePosition: 1 });
      const outOfRange = /^priority: must be between 1 \(highest\) and 5 \(lowest\), or 0 for the default 3; got (6|7)$/;
      await expectStatus(create(x, 6), Status.INVALID_ARGUMENT, outOfRange);
      // The requests that wait for no child check it too.
      const ops = clientsOf(t.channel, tokens.ops);
      const instance = new Uint8Array([1]);
      await expectStatus(ops.engine.addInstance({ modelType: "systest.Model", instance, priority: 7 }), Status.INVALID_ARGUMENT, outOfRange);
      await expectStatus(ops.engine.updateInstance({ modelId: "m-none", instance, priority: 7 }), Status.INVALID_ARGUMENT, outOfRange);
      await expectStatus(ops.engine.deleteModel({ modelId: "m-none", priority: 7 }), Status.INVALID_ARGUMENT, outOfRange);

      const all = new Set([hold, ...fromX, ...fromY, urgent]);
      const done = new Promise<void>((resolve) => {
        onEnd = () => [...all].every((id) => ended.has(id)) && resolve();
      });
      await x.actions.cancelAction({ actionId: hold });
      await done;
      // x's calls came first, but x and y take turns at priority 5.
      const order = started.filter((id) => id !== hold);
      expect(order.slice(0, 6)).toEqual([urgent, fromX[0], fromY[0], fromX[1], fromY[1], fromX[2]]);
      expect(order.slice(6)).toEqual(fromX.slice(3));
      const listed = await y.actions.listActions({ priority: 1 });
      expect(listed.actions.map((a) => a.id)).toEqual([urgent]);
    } finally {
      unsubscribe();
    }
  });
});
