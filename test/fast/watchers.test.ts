/**
 * The watch module's rules (WatchState and WatchAction through the engine, as openEngine
 * composes it), in milliseconds: the memory store, fake plugin calls, a fake clock.
 */
import { getEventListeners } from "node:events";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { type Action, ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { ChangeKind, type WatchStateResponse, WatchStateResponseSchema } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../../server/engine/engine.ts";
import type { StateEvent } from "../../server/engine/state-publisher.ts";
import type { StateFilter } from "../../server/engine/watch.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { type EngineConfig, openFastEngine, request, settle } from "../helpers/fast-engine.ts";
import { TestStore } from "../helpers/test-store.ts";

vi.setConfig({ testTimeout: 10_000 });

const TYPE = "fake.Model";
const MiB = 2 ** 20;

let store: TestStore;
let calls: FakePluginCalls;
let engine: Engine | undefined;
/** Aborted after each test: every stream a test opened ends. */
let streams: AbortController;

async function open(config: EngineConfig = {}): Promise<Engine> {
  engine = await openFastEngine({ store, processes: calls, plugins: pluginRegistry([TYPE]), engine: config });
  return engine;
}

beforeEach(() => {
  vi.useFakeTimers();
  store = new TestStore();
  calls = new FakePluginCalls();
  streams = new AbortController();
});

afterEach(async () => {
  streams.abort();
  await engine?.close();
  engine = undefined;
  vi.useRealTimers();
});

const noFilter: StateFilter = { modelIds: [], actionIds: [], kinds: [] };

function watchState(e: Engine, from = 0n, filter: Partial<StateFilter> = {}, signal = streams.signal): AsyncIterator<WatchStateResponse> {
  return e.watchState({ from, filter: { ...noFilter, ...filter } }, signal)[Symbol.asyncIterator]();
}

/** A stream read in the background as its messages come: what came so far, and whether it ended. */
function follow<T>(iterator: AsyncIterator<T>) {
  const state = { messages: [] as T[], ended: false, error: undefined as unknown };
  const done = (async () => {
    try {
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) state.messages.push(next.value);
    } catch (error) {
      state.error = error;
    } finally {
      state.ended = true;
    }
  })();
  return Object.assign(state, { done });
}

/** The next message, which must come without the clock. */
async function next<T>(iterator: AsyncIterator<T>): Promise<T> {
  const result = await iterator.next();
  if (result.done) throw new Error("the stream ended");
  return result.value;
}

/** What a message says, to compare streams: its revision, what it is and whose. */
function said(message: WatchStateResponse): string {
  const { event } = message;
  const whose =
    event.case === "snapshot"
      ? `${event.value.models.length}m/${event.value.actions.length}a${message.reset ? " reset" : ""}`
      : event.case === "modelDeleted"
        ? event.value
        : `${event.value?.id}${event.case === "actionUpserted" ? ` ${ActionStatus[event.value.status]}` : ""}`;
  return `${message.revision} ${event.case} ${whose}`;
}

/** The model or action a change is of. */
function subject({ event }: WatchStateResponse): string | undefined {
  if (event.case === "modelDeleted") return event.value;
  return event.case === "modelUpserted" || event.case === "actionUpserted" ? event.value.id : undefined;
}

/** What a client knows after applying a stream's messages: each model's revision and each action's status. */
function known(messages: WatchStateResponse[]) {
  const models = new Map<string, bigint>();
  const actions = new Map<string, ActionStatus>();
  for (const { event } of messages) {
    if (event.case === "snapshot") {
      models.clear();
      actions.clear();
      for (const m of event.value.models) models.set(m.id, m.revision);
      for (const a of event.value.actions) actions.set(a.id, a.status);
    } else if (event.case === "modelUpserted") models.set(event.value.id, event.value.revision);
    else if (event.case === "modelDeleted") models.delete(event.value);
    else if (event.case === "actionUpserted") actions.set(event.value.id, event.value.status);
  }
  return { models, actions };
}

/** The same, for a change as the publisher published it. */
function published(event: StateEvent): string {
  switch (event.kind) {
    case "model_upserted":
      return `${event.revision} modelUpserted ${event.model.id}`;
    case "model_deleted":
      return `${event.revision} modelDeleted ${event.modelId}`;
    case "action_upserted":
      return `${event.revision} actionUpserted ${event.action.id} ${ActionStatus[event.action.status]}`;
  }
}

function snapshotOf(message: WatchStateResponse | undefined) {
  expect(message?.event.case).toBe("snapshot");
  return message!.event.value as { models: Model[]; actions: Action[] };
}

const addModel = (e: Engine): Promise<Model> => e.addInstance(TYPE, new Uint8Array([1]));

/** Everything published from now on, as `said` shows it. */
function publishedFrom(e: Engine): string[] {
  const events: string[] = [];
  e.subscribe((event) => events.push(published(event)));
  return events;
}

describe("WatchState", () => {
  test("starts with the snapshot at the current revision, then each change once, in the order published, never instance bytes", async () => {
    const e = await open();
    const [m1, m2] = [await addModel(e), await addModel(e)];
    const running = await e.predict(m1.id, request());
    await settle();
    const revision = e.stats.revision;

    const stream = follow(watchState(e));
    await settle();
    const [first] = stream.messages;
    expect(first).toMatchObject({ revision, reset: false, more: false });
    const state = snapshotOf(first);
    expect(state.models.map((m) => m.id).sort()).toEqual([m1.id, m2.id].sort());
    expect(state.actions.map((a) => [a.id, a.status])).toEqual([[running.id, ActionStatus.EXECUTING]]);

    const events = publishedFrom(e);
    calls.of(running.id).finish({ value: 1 });
    await settle();
    const m3 = await addModel(e);
    await e.deleteModel(m2.id);
    await e.updateInstance(m3.id, new Uint8Array(64).fill(7));
    const predicted = await e.predict(m3.id, request());
    await settle();
    expect(events.length).toBeGreaterThanOrEqual(6);
    expect(stream.messages.slice(1).map(said)).toEqual(events);
    expect(events.join("\n")).toContain(`modelDeleted ${m2.id}`);
    expect(events.join("\n")).toContain(`actionUpserted ${predicted.id} EXECUTING`);
    expect(stream.ended).toBe(false);
    // Models come with their size, never their instance.
    const models = stream.messages.flatMap(({ event }) =>
      event.case === "snapshot" ? event.value.models : event.case === "modelUpserted" ? [event.value] : [],
    );
    expect(models.map((m) => m.instanceSize)).toContain(64n);
    for (const model of models) expect(model.instance.byteLength).toBe(0);
  });

  test("every watcher gets every change once, in the same order, however the changes come", async () => {
    const e = await open();
    const model = await addModel(e);
    const watchers = [follow(watchState(e)), follow(watchState(e)), follow(watchState(e, e.stats.revision))];
    await settle();
    const events = publishedFrom(e);
    // Changes between which the watchers read, and changes of several keys in one turn.
    const first = await e.predict(model.id, request());
    await settle();
    const more = await Promise.all([addModel(e), addModel(e), addModel(e)]);
    await e.updateInstance(more[0]!.id, new Uint8Array([2]));
    calls.of(first.id).finish({ value: 1 });
    await settle();
    expect(events.length).toBeGreaterThanOrEqual(7);
    const [a, b, c] = watchers.map((w) => w.messages.filter((m) => m.event.case !== "snapshot").map(said));
    expect(a).toEqual(events);
    expect(b).toEqual(events);
    expect(c).toEqual(events);
    // The resumed one had nothing to catch up on: no snapshot.
    expect(watchers[2]!.messages.some((m) => m.event.case === "snapshot")).toBe(false);
  });

  test("the snapshot comes in pages of at most max_page_mb, all at its revision; all but the last say more", async () => {
    const e = await open({ max_page_mb: 300 / MiB });
    const models: string[] = [];
    for (let i = 0; i < 12; i++) models.push((await addModel(e)).id);
    const stream = follow(watchState(e));
    await settle();
    const pages = stream.messages;
    expect(pages.length).toBeGreaterThan(2);
    for (const page of pages) {
      expect(page.revision).toBe(e.stats.revision);
      // A page is cut before the item that would pass the bound.
      if (snapshotOf(page).models.length > 1) expect(toBinary(WatchStateResponseSchema, page).length).toBeLessThan(300 + 100);
    }
    expect(pages.map((p) => p.more)).toEqual([...pages.slice(1).map(() => true), false]);
    expect(pages.flatMap((p) => snapshotOf(p).models.map((m) => m.id)).sort()).toEqual(models.sort());
    // A change after it comes as a change.
    const later = await addModel(e);
    await settle();
    expect(said(stream.messages.at(-1)!)).toBe(`${e.stats.revision} modelUpserted ${later.id}`);
  });

  test("resumed from a revision it holds: the latest change of each key since then, as it is now, oldest first; then each new change; it then knows what a watcher that stayed knows", async () => {
    const e = await open();
    const [m1, gone] = [await addModel(e), await addModel(e)];
    const stayed = follow(watchState(e));
    await settle();
    const from = e.stats.revision;
    const m2 = await addModel(e);
    await e.updateInstance(m1.id, new Uint8Array([2]));
    const action = await e.predict(m2.id, request()); // QUEUED, then EXECUTING
    await settle();
    await e.deleteModel(gone.id);
    await e.updateInstance(m1.id, new Uint8Array([3]));

    const stream = follow(watchState(e, from));
    await settle();
    expect(stream.messages.map((m) => [m.event.case, subject(m)])).toEqual([
      ["modelUpserted", m2.id],
      ["actionUpserted", action.id],
      ["modelDeleted", gone.id],
      ["modelUpserted", m1.id],
    ]);
    const [, executing, , latest] = stream.messages;
    expect(executing!.event.value).toMatchObject({ status: ActionStatus.EXECUTING });
    expect(latest).toMatchObject({ revision: e.stats.revision, event: { value: { revision: 3n } } });
    const revisions = stream.messages.map((m) => m.revision);
    expect([...revisions].sort((x, y) => (x < y ? -1 : 1))).toEqual(revisions);

    calls.of(action.id).finish({ value: 1 });
    await settle();
    expect(said(stream.messages.at(-1)!)).toBe(`${e.stats.revision} actionUpserted ${action.id} SUCCEEDED`);
    // Its snapshot before the revision, then what the resume brought: what the one that stayed saw.
    const before = stayed.messages.filter((m) => m.revision <= from);
    expect(known([...before, ...stream.messages])).toEqual(known(stayed.messages));
    expect(known(stayed.messages).models.has(gone.id)).toBe(false);
  });

  test("resumed: an action ended and retired from the live state since then comes as the history stored it", async () => {
    const e = await open({ retain_actions: 0 });
    const model = await addModel(e);
    const action = await e.predict(model.id, request());
    await settle();
    const from = e.stats.revision;
    calls.of(action.id).finish({ value: 1 });
    await settle();
    expect(e.getState("").actions).toEqual([]);

    const stream = follow(watchState(e, from));
    await settle();
    expect(stream.messages).toHaveLength(1);
    expect(stream.messages[0]).toMatchObject({
      revision: e.stats.revision,
      event: { case: "actionUpserted", value: { id: action.id, status: ActionStatus.SUCCEEDED } },
    });
  });

  test("a revision older than state_history reaches back, or one this run never gave, gets a snapshot marked reset", async () => {
    const e = await open({ state_history: 2 });
    const from = e.stats.revision;
    for (let i = 0; i < 3; i++) await addModel(e);
    const tooOld = watchState(e, from);
    expect(await next(tooOld)).toMatchObject({
      reset: true,
      revision: e.stats.revision,
      event: { case: "snapshot", value: { models: { length: 3 } } },
    });
    const elsewhere = watchState(e, e.stats.revision + 1_000_000n);
    expect(await next(elsewhere)).toMatchObject({ reset: true, event: { case: "snapshot" } });
    // The oldest revision the ring still reaches: what changed after it, no snapshot.
    const reached = watchState(e, from + 1n);
    expect((await next(reached)).event.case).toBe("modelUpserted");
  });

  test("filters narrow the snapshot, the resume and the changes; each given applies, and a list over 1000 entries is refused by name", async () => {
    const e = await open();
    const [a, b] = [await addModel(e), await addModel(e)];
    const from = e.stats.revision;
    const onA = await e.predict(a.id, request());
    const onB = await e.predict(b.id, request());
    await settle();

    const events = publishedFrom(e);
    const byModel = follow(watchState(e, 0n, { modelIds: [a.id] }));
    const byAction = follow(watchState(e, from, { actionIds: [onB.id] }));
    const byKind = follow(watchState(e, 0n, { kinds: [ChangeKind.MODEL_UPSERTED] }));
    const both = follow(watchState(e, from, { modelIds: [b.id], kinds: [ChangeKind.ACTION_UPSERTED] }));
    await settle();
    const snapshot = snapshotOf(byModel.messages[0]);
    expect([snapshot.models.map((m) => m.id), snapshot.actions.map((x) => x.id)]).toEqual([[a.id], [onA.id]]);
    expect(snapshotOf(byKind.messages[0]).actions).toEqual([]);
    // Resumed: only what passes, as it is now.
    expect(byAction.messages.map(said)).toEqual([expect.stringContaining(`actionUpserted ${onB.id} EXECUTING`)]);
    expect(both.messages.map(said)).toEqual([expect.stringContaining(`actionUpserted ${onB.id} EXECUTING`)]);

    calls.of(onA.id).finish({ value: 1 });
    calls.of(onB.id).finish({ value: 2 });
    await settle();
    await e.updateInstance(b.id, new Uint8Array([3]));
    await e.updateInstance(a.id, new Uint8Array([3]));
    await e.deleteModel(a.id);
    await settle();
    const passing = (...words: string[]) => events.filter((event) => words.some((w) => event.includes(w)));
    expect(passing(`${onA.id} SUCCEEDED`, `modelDeleted ${a.id}`, `modelUpserted ${a.id}`)).toHaveLength(3);
    expect(byModel.messages.slice(1).map(said)).toEqual(passing(a.id, onA.id));
    expect(byAction.messages.slice(1).map(said)).toEqual(passing(onB.id));
    expect(byKind.messages.slice(1).map(said)).toEqual(passing("modelUpserted"));
    expect(both.messages.slice(1).map(said)).toEqual(passing(`actionUpserted ${onB.id}`));

    const many = Array.from({ length: 1001 }, (_, i) => `a-${i}`);
    await expect(next(watchState(e, 0n, { actionIds: many }))).rejects.toMatchObject({
      kind: "invalid_argument",
      message: expect.stringContaining("action_ids: at most 1000 entries, got 1001"),
    });
    expect(() => watchState(e, 2n ** 63n)).toThrow(
      expect.objectContaining({ message: expect.stringContaining("from_revision: must be below 2^63") }),
    );
  });

  test("a watcher that stops reading holds one pending change per key, the latest; reading again, it gets them in the order of their latest changes", async () => {
    const e = await open();
    const [m1, m2] = [await addModel(e), await addModel(e)];
    const stream = watchState(e);
    await next(stream);
    for (let i = 0; i < 100; i++) {
      await e.updateInstance(m2.id, new Uint8Array([i]));
      await e.updateInstance(m1.id, new Uint8Array([i]));
    }
    expect(e.stats).toMatchObject({ watchers: 1, pending: 2 });
    const m3 = await addModel(e);
    await e.updateInstance(m2.id, new Uint8Array([1]));
    expect(e.stats.pending).toBe(3);
    const read = [await next(stream), await next(stream), await next(stream)];
    expect(read.map((m) => [m.event.case, m.event.case === "modelUpserted" ? [m.event.value.id, m.event.value.revision] : undefined])).toEqual([
      ["modelUpserted", [m1.id, 101n]],
      ["modelUpserted", [m3.id, 1n]],
      ["modelUpserted", [m2.id, 102n]],
    ]);
    expect(e.stats.pending).toBe(0);
  });

  test("a watcher further behind than watcher_queue_mb loses its pending changes and gets a fresh snapshot marked reset, then the changes after it", async () => {
    const queueBytes = 2048;
    const e = await open({ watcher_queue_mb: queueBytes / MiB });
    await addModel(e);
    const stream = watchState(e);
    await next(stream);
    const sizes: number[] = [];
    e.subscribe((event) => {
      if (event.kind === "model_upserted")
        sizes.push(
          toBinary(
            WatchStateResponseSchema,
            create(WatchStateResponseSchema, { revision: event.revision, event: { case: "modelUpserted", value: event.model } }),
          ).length,
        );
    });
    // Up to the bound, changes wait for the reader; the change that passes it drops them all.
    let before = 0;
    while (e.stats.pending === sizes.length) {
      before = e.stats.pendingBytes;
      expect(before).toBeLessThanOrEqual(queueBytes);
      await addModel(e);
    }
    expect(sizes.length).toBeGreaterThan(2);
    expect(before + sizes.at(-1)!).toBeGreaterThan(queueBytes);
    expect(e.stats).toMatchObject({ watchers: 1, pending: 0, pendingBytes: 0 });

    const reset = await next(stream);
    expect(reset).toMatchObject({ reset: true, revision: e.stats.revision, more: false });
    expect(snapshotOf(reset).models).toHaveLength(sizes.length + 1);
    const later = await addModel(e);
    expect(said(await next(stream))).toBe(`${e.stats.revision} modelUpserted ${later.id}`);
  });

  test("a stream that is aborted, broken off or fails leaves no listener and no queue behind", async () => {
    const e = await open();
    const model = await addModel(e);
    const baseline = e.stats.subscribers;

    const aborted = new AbortController();
    const waiting = follow(watchState(e, 0n, {}, aborted.signal));
    const action = await e.predict(model.id, request());
    const watching = follow(e.watchAction(action.id, aborted.signal)[Symbol.asyncIterator]());
    await settle();
    expect(e.stats).toMatchObject({ watchers: 1, subscribers: baseline + 2, stopListeners: 2 });
    expect(getEventListeners(aborted.signal, "abort").length).toBeGreaterThan(0);
    aborted.abort();
    await Promise.all([waiting.done, watching.done]);
    expect([waiting.error, watching.error]).toEqual([undefined, undefined]);

    for await (const _ of e.watchState({ from: 0n, filter: noFilter }, streams.signal)) break;
    for await (const _ of e.watchAction(action.id, streams.signal)) break;
    await expect(next(watchState(e, 0n, { kinds: Array.from({ length: 1001 }, () => ChangeKind.MODEL_UPSERTED) }))).rejects.toThrow(/kinds/);
    await expect(next(e.watchAction("a-000000000000", streams.signal)[Symbol.asyncIterator]())).rejects.toMatchObject({ kind: "not_found" });

    expect(e.stats).toMatchObject({ watchers: 0, pending: 0, subscribers: baseline, stopListeners: 0 });
    expect(getEventListeners(aborted.signal, "abort")).toHaveLength(0);
    expect(getEventListeners(streams.signal, "abort")).toHaveLength(0);
  });

  test("closing the engine ends every stream once the watchers have seen the last updates of the actions it stopped", async () => {
    const e = await open();
    const model = await addModel(e);
    const action = await e.predict(model.id, request());
    await settle();
    const state = follow(watchState(e));
    const updates = follow(e.watchAction(action.id, streams.signal)[Symbol.asyncIterator]());
    await settle();

    await e.close();
    await Promise.all([state.done, updates.done]);
    const last = state.messages.at(-1)!;
    expect(last.event.case === "actionUpserted" && last.event.value).toMatchObject({ id: action.id, status: ActionStatus.CANCELLED });
    expect(updates.messages.map((a) => a.status)).toEqual([ActionStatus.EXECUTING, ActionStatus.CANCELLED]);
    expect([state.error, updates.error]).toEqual([undefined, undefined]);
    expect(e.stats).toMatchObject({ watchers: 0, stopListeners: 0 });
  });
});

describe("WatchAction", () => {
  test("gives the action now, then each update, and ends with the update that ends it", async () => {
    const e = await open({ progress_interval: 1 });
    // The engine's own listeners (the resident janitor's).
    const baseline = e.stats.subscribers;
    const model = await addModel(e);
    const action = await e.predict(model.id, request());
    const stream = follow(e.watchAction(action.id, streams.signal)[Symbol.asyncIterator]());
    await settle();
    calls.of(action.id).finish({ value: 1 });
    await stream.done;
    const statuses = stream.messages.map((a) => a.status);
    // As it was when the stream opened: its run had not started yet.
    expect(statuses[0]).toBe(ActionStatus.QUEUED);
    expect(statuses.at(-1)).toBe(ActionStatus.SUCCEEDED);
    expect(e.stats.subscribers).toBe(baseline);

    // An action that has ended: that one message, and the end.
    const again = follow(e.watchAction(action.id, streams.signal)[Symbol.asyncIterator]());
    await again.done;
    expect(again.messages).toEqual([await e.getAction(action.id, ActionView.BASIC)]);
  });

  test("with progress_interval 0, each report in order, none coalesced; a reader more than watcher_queue_mb behind is ended with RESOURCE_EXHAUSTED, not left to miss some unawares", async () => {
    const e = await open({ progress_interval: 0, watcher_queue_mb: 0.01 });
    const model = await addModel(e);
    const action = await e.predict(model.id, request());
    await settle();
    const reading = follow(e.watchAction(action.id, streams.signal)[Symbol.asyncIterator]());
    await settle();
    // Reported at once, in one turn: a coalescing stream would give only the last.
    for (let i = 1; i <= 5; i++) calls.of(action.id).report({ i });
    await settle();
    // The reports each update carried (its state), each once: the update that ends the action carries the last again.
    const seen = () =>
      reading.messages
        .map((a) => (a.state?.kind.case === "structValue" ? a.state.kind.value.fields.i?.kind.value : undefined))
        .filter((i, k, all) => i !== undefined && i !== all[k - 1]);
    expect(seen()).toEqual([1, 2, 3, 4, 5]);

    const stalled = e.watchAction(action.id, streams.signal)[Symbol.asyncIterator]();
    await next(stalled);
    // A stream that is not read while ~30 kB of updates pile up, 20 at a time.
    for (let i = 6; i <= 400; i++) {
      calls.of(action.id).report({ i, pad: "x".repeat(50) });
      if (i % 20 === 0) await settle();
    }
    const ended = (async () => {
      for (;;) await next(stalled);
    })();
    await expect(ended).rejects.toMatchObject({ kind: "queue_full", message: expect.stringContaining("engine.watcher_queue_mb") });
    // The stream that kept reading got every one.
    calls.of(action.id).finish({ value: 1 });
    await reading.done;
    expect(seen()).toEqual(Array.from({ length: 400 }, (_, k) => k + 1));
  });
});
