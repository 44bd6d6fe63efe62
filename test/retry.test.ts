/**
 * Durable actions through a real server and real children: a retry policy runs a failed
 * call again (a plugin error, a child that exits, a call stalled past its heartbeat
 * timeout), a checkpoint carries a fit over from one attempt to the next — after a crash
 * of its child, of its server (SQLite, restarted), or of one server of a cluster
 * (PostgreSQL, taken over by another).
 */
import { once } from "node:events";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Action, ActionStatus, RetryPolicySchema } from "../gen/plinth/v1/action_pb.ts";
import { dataAccess, json, jsonOf } from "./helpers/args.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { clients, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const TYPE = "durable.Trainer";
const retry = (maxAttempts: number, initialMs = 50, nonRetryableErrorCodes: string[] = []) =>
  create(RetryPolicySchema, { maxAttempts, initialInterval: durationFromMs(initialMs), nonRetryableErrorCodes });
const decode = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));
const kwargs = (values: Record<string, number | string>) => Object.fromEntries(Object.entries(values).map(([k, v]) => [k, json(v)]));
const codes = (action: Action) => action.attempts.map((a) => a.error?.code);

describe("a retry policy, on one server", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      backend: { kind: "memory" },
      engine: { max_children: 3 },
      // Well above what a busy machine delays a step by.
      plugins: [{ module: fixture("durable.ts"), heartbeat_timeout: { fit: 5 } }],
      metrics: { address: "127.0.0.1:0" },
    });
  });
  afterAll(() => t?.close());

  const model = async () => (await t.engine.createInstance({ modelType: TYPE, wait: true })).action!.modelId;
  const runs = async (modelId: string) => decode((await t.engine.getModel({ modelId, includeInstance: true })).model!.instance).runs;

  it("runs a call that failed twice a third time: it succeeds, and the action lists the failed attempts", async () => {
    const modelId = await model();
    const fit = (await t.engine.fit({ modelId, kwargs: kwargs({ fail: 2 }), retry: retry(3), wait: true })).action!;
    expect(fit).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 3, retry: { maxAttempts: 3 } });
    expect(codes(fit)).toEqual(["flaky", "flaky"]);
    expect(fit.attempts.map((a) => a.error?.message)).toEqual(["attempt 1 fails", "attempt 2 fails"]);
    expect(await runs(modelId)).toEqual([{ attempt: 3, from: 0, epochs: [1, 2, 3] }]);
    const metrics = await (await fetch(`http://127.0.0.1:${t.server.metricsPort}/metrics`)).text();
    const retries = metrics.split("\n").find((line) => line.startsWith("plinth_action_retries_total{") && line.includes('code="flaky"'));
    expect(retries).toMatch(/call="fit"/);
    expect(retries).toMatch(/ 2$/);
  });

  it("retries a child that exited and a call stopped as stalled; a child that crashed mid-fit resumes from its checkpoint", async () => {
    const [a, b, c] = [await model(), await model(), await model()];
    const [exited, stalled, crashed] = await Promise.all([
      t.engine.fit({ modelId: a, kwargs: kwargs({ fail: 1, how: "exit" }), retry: retry(2), wait: true }),
      t.engine.fit({ modelId: b, kwargs: kwargs({ fail: 1, how: "hang" }), retry: retry(2), wait: true }),
      t.engine.fit({ modelId: c, kwargs: kwargs({ epochs: 4, crash_at: 2 }), retry: retry(2), wait: true }),
    ]);
    expect([exited, stalled, crashed].map((r) => [ActionStatus[r.action!.status], codes(r.action!)])).toEqual([
      ["SUCCEEDED", ["plugin_exited"]],
      ["SUCCEEDED", ["stalled"]],
      ["SUCCEEDED", ["plugin_exited"]],
    ]);
    expect(await runs(c)).toEqual([{ attempt: 2, from: 2, epochs: [3, 4] }]);
    expect(crashed.action!.checkpoint).toMatchObject({ attempt: 2, size: expect.any(BigInt) });
    expect(jsonOf(crashed.action!.checkpoint!.value)).toEqual({ epoch: 4 });
  });

  it("ends at once on a code the policy lists as non-retryable, and on the last attempt's failure", async () => {
    const modelId = await model();
    const listed = (await t.engine.fit({ modelId, kwargs: kwargs({ fail: 5, code: "bad_data" }), retry: retry(5, 50, ["bad_data"]), wait: true }))
      .action!;
    expect(listed).toMatchObject({ status: ActionStatus.FAILED, attempt: 1, error: { code: "bad_data" } });
    const last = (await t.engine.fit({ modelId, kwargs: kwargs({ fail: 5 }), retry: retry(2), wait: true })).action!;
    expect(last).toMatchObject({ status: ActionStatus.FAILED, attempt: 2, error: { code: "flaky", message: "attempt 2 fails" } });
    expect(codes(last)).toEqual(["flaky"]);
    expect((await t.engine.getModel({ modelId })).model!.revision).toBe(1n);
  });

  it("refuses a checkpoint over 1 MiB, and one from a data-access call, saying why; a predict's is stored", async () => {
    const modelId = await model();
    const big = (await t.engine.predict({ modelId, args: [json("big")], wait: true })).action!;
    expect(big).toMatchObject({ status: ActionStatus.SUCCEEDED });
    expect(jsonOf(big.result!.prediction)).toEqual({
      checkpoint: expect.stringMatching(/^ctx\.checkpoint: the value is \d+ bytes encoded, over the 1048576 a checkpoint may hold/),
    });
    const fromData = (await t.engine.predict({ modelId, args: [dataAccess("durable.checkpointing")], wait: true })).action!;
    expect(fromData).toMatchObject({ status: ActionStatus.SUCCEEDED });
    expect(jsonOf(fromData.result!.prediction)).toEqual({
      attempt: 1,
      got: "ctx.checkpoint: a data_access call keeps no checkpoint: the action's own call (instantiate, fit or predict) does",
      checkpoint: "stored",
    });
    expect(jsonOf(fromData.checkpoint!.value)).toEqual({ small: true });
  });
});

/** Watches the action until its stored checkpoint shows `epoch`. */
async function untilCheckpoint(c: ReturnType<typeof clients>, actionId: string, epoch: number): Promise<void> {
  for await (const u of c.actions.watchAction({ actionId })) {
    const value = u.action?.checkpoint?.value;
    if (value && (jsonOf(value) as { epoch: number }).epoch >= epoch) return;
  }
}

describe("a checkpoint survives its server", () => {
  const started: ServerProcess[] = [];
  afterEach(() => {
    for (const p of started.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  });
  const serve = (config: string) => {
    const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
    started.push(p);
    return p;
  };
  const plugin = ["plugins:", `  - module: ${fixture("durable.ts")}`];

  it("SQLite: a server killed mid-fit restarts, and the fit's next attempt resumes from its checkpoint", async () => {
    const config = writeConfig(["backend:", `  path: ${join(tempDir("plinth-retry-"), "plinth.db")}`, ...plugin].join("\n"));
    const first = serve(config);
    const a = clients(await first.port);
    const modelId = (await a.engine.createInstance({ modelType: TYPE, wait: true })).action!.modelId;
    const fit = (await a.engine.fit({ modelId, kwargs: kwargs({ epochs: 4, pause_at: 2 }), retry: retry(2) })).action!;
    await untilCheckpoint(a, fit.id, 2);
    a.channel.close();
    first.child.kill("SIGKILL");
    await once(first.child, "exit");

    const second = serve(config);
    const b = clients(await second.port);
    const ended = (await b.actions.waitAction({ actionId: fit.id })).action!;
    expect(ended).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 2 });
    expect(ended.attempts.map((x) => [x.attempt, x.error?.code, x.error?.message])).toEqual([[1, "interrupted", "interrupted by server restart"]]);
    const model = (await b.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(decode(model.instance).runs).toEqual([{ attempt: 2, from: 2, epochs: [3, 4] }]);
    expect(second.output()).toMatch(/an action the previous server left unfinished runs its attempt 2/);
    b.channel.close();
  });

  it("PostgreSQL: a server killed mid-fit, another server runs the fit's next attempt from its checkpoint", async () => {
    const url = await newDatabase();
    // Short for a quick takeover, yet above a busy machine's stalls.
    const config = writeConfig(["backend:", "  kind: postgres", `  url: ${url}`, "  lease_seconds: 5", ...plugin].join("\n"));
    const first = serve(config);
    const a = clients(await first.port);
    const modelId = (await a.engine.createInstance({ modelType: TYPE, wait: true })).action!.modelId;
    const fit = (await a.engine.fit({ modelId, kwargs: kwargs({ epochs: 4, pause_at: 2 }), retry: retry(2) })).action!;
    await untilCheckpoint(a, fit.id, 2);
    const second = serve(config);
    const b = clients(await second.port);
    a.channel.close();
    first.child.kill("SIGKILL");

    const ended = (await b.actions.waitAction({ actionId: fit.id })).action!;
    const self = (await b.engine.listPlugins({})).servers.find((s) => s.thisServer)!.name;
    expect(ended).toMatchObject({ status: ActionStatus.SUCCEEDED, attempt: 2, server: self });
    expect(codes(ended)).toEqual(["interrupted"]);
    expect(ended.attempts[0]!.server).not.toBe(self);
    const model = (await b.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(decode(model.instance).runs).toEqual([{ attempt: 2, from: 2, epochs: [3, 4] }]);
    b.channel.close();
  });
});
