/** The TypeScript client (client/mod.ts) against the real server, as a program would use it. */
import { join } from "node:path";
import type { ClientMiddleware } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { createPlinthClient, dataAccess, PlinthActionError, type PlinthClient, type Progress, Tensor } from "../client/mod.ts";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";

let t: TestServer | undefined;
let client: PlinthClient | undefined;
afterEach(async () => {
  client?.close();
  await t?.close();
  t = undefined;
  client = undefined;
});

async function start() {
  t = await startTestServer({
    engine: { sigterm_timeout: 1 },
    plugins: [{ module: join(root, "plugins/system-test/mod.ts") }, { module: fixture("payloads.ts") }, { module: fixture("misbehave.ts") }],
  });
  client = createPlinthClient(`127.0.0.1:${t.port}`);
  return client;
}

describe("the TypeScript client", () => {
  it("creates, fits with data access and predicts with plain values, following the fit's progress", async () => {
    const c = await start();
    const created = await c.create("systest.Model", { args: ["a"], kwargs: { k: { nested: [1, 2] } } }).done;
    expect(created.revision).toBe(1n);

    // The fit waits behind another on the model until its progress is followed: every phase is seen.
    const blocker = c.fit(created.modelId, { kwargs: { sleep: 60 } });
    await blocker.started;
    const run = c.fit(created.modelId, { args: [dataAccess("systest.echo", [42], { sleep: 0.3 })], kwargs: { sleep: 0.5 } });
    const seen: Progress[] = [];
    for await (const p of run.progress) {
      if (seen.length === 0) await blocker.cancel();
      seen.push(p);
    }
    const fitted = await run.done;
    expect(fitted.modelId).toBe(created.modelId);
    expect(fitted.revision).toBe(2n);
    expect(fitted.state).toEqual({ progress: 1 });
    const statuses = seen.map((p) => p.status);
    expect(statuses).toContain("accessing_data");
    expect(statuses).toContain("executing");
    expect(statuses.at(-1)).toBe("succeeded");
    // The data-access argument's own progress, and the plugin's reports on the way.
    expect(seen.some((p) => p.dataAccess[0]?.name === "systest.echo" && p.dataAccess[0].argument === "args[0]")).toBe(true);
    expect(seen.some((p) => p.status === "executing" && typeof (p.state as { progress?: number } | undefined)?.progress === "number")).toBe(true);

    const { prediction } = await c.predict(created.modelId, { args: [[1, 2, 3]], kwargs: { flag: true } }).done;
    expect(prediction).toMatchObject({
      args: [[1, 2, 3]],
      kwargs: { flag: true },
      instance: { args: { args: ["a"], kwargs: { k: { nested: [1, 2] } } } },
    });
  });

  it("gives done in one round trip when nothing but done is read; reading progress or started follows the action", async () => {
    t = await startTestServer({ plugins: [{ module: join(root, "plugins/system-test/mod.ts") }] });
    const calls: string[] = [];
    const count: ClientMiddleware = async function* (call, options) {
      calls.push(call.method.path.split("/").at(-1)!);
      return yield* call.next(call.request, options);
    };
    client = createPlinthClient(`127.0.0.1:${t.port}`, { middleware: [count] });
    const { modelId } = await client.create("systest.Model").done;
    calls.length = 0;
    const { prediction } = await client.predict(modelId, { args: [[1, 2]] }).done;
    expect(prediction).toMatchObject({ args: [[1, 2]] });
    expect(calls).toEqual(["Predict"]);

    calls.length = 0;
    const run = client.predict(modelId, { args: [[3]] });
    const started = await run.started;
    expect(started.status).not.toBe(ActionStatus.SUCCEEDED);
    expect((await run.done).prediction).toMatchObject({ args: [[3]] });
    expect(calls).toEqual(["Predict", "WaitAction"]);
  });

  it("sends bytes, tensors and large JSON, and gets them back as Uint8Array, Tensor and values", async () => {
    const c = await start();
    const { modelId } = await c.create("payloads.Echo").done;
    const tensor = new Tensor("float32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6.5]));
    const back = (await c.predict(modelId, { args: [tensor] }).done).prediction;
    expect(back).toBeInstanceOf(Tensor);
    expect((back as Tensor).shape).toEqual([2, 3]);
    expect(Array.from((back as Tensor).data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6.5]);

    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    expect((await c.predict(modelId, { args: [bytes] }).done).prediction).toEqual(bytes);

    const batch = Array.from({ length: 5000 }, (_, i) => i / 7);
    expect((await c.predict(modelId, { args: [batch] }).done).prediction).toEqual(batch);
  });

  it("cancels the action when its AbortSignal aborts: done rejects with the cancel", async () => {
    const c = await start();
    const { modelId } = await c.create("systest.Model").done;
    const controller = new AbortController();
    const run = c.fit(modelId, { kwargs: { sleep: 30 }, signal: controller.signal });
    for await (const p of run.progress) {
      if (p.status === "executing") break;
    }
    controller.abort();
    const error = await run.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PlinthActionError);
    expect((error as PlinthActionError).status).toBe("cancelled");
    expect((error as PlinthActionError).code).toBe("cancelled");
    expect((error as PlinthActionError).action.cancel?.by).toBe("CancelAction");
  });

  it("rejects done with the plugin's error code, message and stack when the plugin throws", async () => {
    const c = await start();
    const { modelId } = await c.create("misbehave.Model").done;
    const error = await c.predict(modelId, { kwargs: { mode: "throw" } }).done.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PlinthActionError);
    expect((error as PlinthActionError).status).toBe("failed");
    expect((error as PlinthActionError).code).toBe("plugin_error");
    expect((error as PlinthActionError).message).toMatch(/^action a-\S+ failed: plugin_error: /);
    expect((error as PlinthActionError).pluginStack).toContain("misbehave.ts");
  });
});
