/**
 * The Prometheus endpoint, scraped over HTTP as Prometheus does, against what the test
 * did: actions by call, model type and status, their durations, children started and
 * killed, watchers, queue depth, store commits and event-loop lag.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Action, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, stateOf } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { watchActions } from "./helpers/watch.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    engine: { reuse_workers: false, min_idle_workers: 0, sigterm_timeout: 1 },
    plugins: [{ module: "plugins/system-test/mod.ts" }, { module: fixture("misbehave.ts") }],
    metrics: { address: "127.0.0.1:0" },
  });
});
afterAll(() => t?.close());

/** Samples by name and labels, e.g. `plinth_actions_total{call="fit",…}` → 2. */
async function scrape(): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${t.server.metricsPort}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain");
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    // Labels sorted: the key does not depend on the order the library prints them in.
    const labels = (m[2] ?? "")
      .split(/,(?=[a-z_]+=")/)
      .filter(Boolean)
      .sort()
      .join(",");
    samples.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[3]));
  }
  return samples;
}

/** The model a create made, and its instance's size. */
const created = ({ action }: { action?: Action | undefined }): [string, number] => [action!.modelId, Number(action!.result!.model!.instanceSize)];

describe("metrics for Prometheus on metrics.address", () => {
  it("agree with the actions run, the children started and killed, and the streams open", async () => {
    // Children SIGKILLed, as the process manager saw them exit.
    let forcedExits = 0;
    t.server.processes.events.on("exit", (_pid: number, exit: { forced: boolean }) => void (exit.forced && forcedExits++));
    const [systest, systestSize] = created(await t.engine.createInstance({ modelType: "systest.Model", wait: true }));
    const [misbehave, misbehaveSize] = created(await t.engine.createInstance({ modelType: "misbehave.Model", wait: true }));
    for (let i = 0; i < 3; i++) expect((await t.engine.predict({ modelId: systest, wait: true })).action!.status).toBe(ActionStatus.SUCCEEDED);
    expect((await t.engine.fit({ modelId: systest, wait: true })).action!.status).toBe(ActionStatus.SUCCEEDED);
    expect((await t.engine.predict({ modelId: misbehave, kwargs: { mode: json("throw") }, wait: true })).action!.status).toBe(ActionStatus.FAILED);
    // One that ignores SIGTERM: cancelled, and its child killed.
    const { action } = await t.engine.predict({ modelId: misbehave, kwargs: { mode: json("ignore_sigterm") } });
    await watchActions(t, (v) => stateOf(v.get(action!.id)?.state) !== null);
    const cancelled = (await t.actions.cancelAction({ actionId: action!.id })).action!;
    expect(cancelled.cancel).toMatchObject({ by: "CancelAction", forced: true });
    // No child is reused here: once every one has exited, the counts are final.
    await expect.poll(() => t.server.processes.live, { timeout: 60_000 }).toBe(0);

    // A watcher open while scraping.
    const controller = new AbortController();
    const stream = t.state.watchState({}, { signal: controller.signal })[Symbol.asyncIterator]();
    await stream.next();
    try {
      const m = await scrape();
      expect(m.get('plinth_actions_total{call="create_instance",model_type="systest.Model",status="succeeded"}')).toBe(1);
      expect(m.get('plinth_actions_total{call="create_instance",model_type="misbehave.Model",status="succeeded"}')).toBe(1);
      expect(m.get('plinth_actions_total{call="predict",model_type="systest.Model",status="succeeded"}')).toBe(3);
      expect(m.get('plinth_actions_total{call="fit",model_type="systest.Model",status="succeeded"}')).toBe(1);
      expect(m.get('plinth_actions_total{call="predict",model_type="misbehave.Model",status="failed"}')).toBe(1);
      expect(m.get('plinth_actions_total{call="predict",model_type="misbehave.Model",status="cancelled"}')).toBe(1);
      expect(m.get('plinth_action_duration_seconds_count{call="predict",model_type="systest.Model"}')).toBe(3);
      expect(m.get('plinth_action_duration_seconds_count{call="predict",model_type="misbehave.Model"}')).toBe(2);
      // The cancelled one ran past sigterm_timeout (1 s): it is in no bucket up to 1 s (the
      // failed one may be, or not on a busy machine: a cold child takes a while to start).
      expect(m.get('plinth_action_duration_seconds_bucket{call="predict",le="1",model_type="misbehave.Model"}')).toBeLessThanOrEqual(1);
      expect(m.get('plinth_action_duration_seconds_sum{call="predict",model_type="misbehave.Model"}')).toBeGreaterThanOrEqual(1);
      expect(m.get('plinth_action_queue_seconds_count{call="predict"}')).toBe(5);
      // Without reuse, one child per call: 2 instantiates, 5 predicts, 1 fit.
      expect(m.get("plinth_child_spawns_total")).toBe(8);
      // The one that ignores SIGTERM; on a busy machine a child retired after its call may
      // also outlive sigterm_timeout (1 s).
      expect(forcedExits).toBeGreaterThanOrEqual(1);
      expect(m.get("plinth_child_forced_kills_total")).toBe(forcedExits);
      expect(m.get("plinth_child_protocol_errors_total")).toBe(0);
      // No child is reused: each call on a model took its instance's bytes (the fit and 3 predicts on revision 1 of one, 2 predicts on the other).
      expect(m.get('plinth_instance_sends_total{resident="false"}')).toBe(6);
      expect(m.get('plinth_instance_sends_total{resident="true"}')).toBe(0);
      expect(m.get("plinth_instance_bytes_sent_total")).toBe(4 * systestSize + 2 * misbehaveSize);
      expect(m.get("plinth_resident_bytes")).toBe(0);
      expect(m.get("plinth_queue_depth")).toBe(0);
      expect(m.get('plinth_children{state="live"}')).toBe(t.server.processes.live);
      expect(m.get("plinth_watchers")).toBe(1);
      expect(m.get("plinth_store_commit_seconds_count")).toBeGreaterThan(0);
      expect(m.has("nodejs_eventloop_lag_seconds")).toBe(true);
      expect(m.has("process_resident_memory_bytes")).toBe(true);
    } finally {
      controller.abort();
    }
  });

  it("answers 404 with where the metrics are for any other path", async () => {
    const response = await fetch(`http://127.0.0.1:${t.server.metricsPort}/`);
    expect(response.status).toBe(404);
    expect(await response.text()).toBe("not found: the metrics are at GET /metrics\n");
  });
});
