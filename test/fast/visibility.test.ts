/**
 * What a caller sees of others' actions (server.auth.visibility), in milliseconds: the
 * redaction itself, then every read of the engine as openEngine composes it, with the
 * memory store, fake plugin calls and a fake clock.
 */
import { create, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { type Action, ActionSchema, ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import { type Arg, ArgSchema, DType } from "../../gen/plinth/v1/arg_pb.ts";
import type { WatchStateResponse } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Caller, Role } from "../../server/engine/caller.ts";
import type { Engine } from "../../server/engine/engine.ts";
import { redacted } from "../../server/engine/visibility.ts";
import { ChildFailure } from "../../server/process/child.ts";
import { dataAccess, json, jsonText } from "../helpers/args.ts";
import { FakePluginCalls, pluginRegistry } from "../helpers/fake-plugins.ts";
import { openFastEngine, request, settle } from "../helpers/fast-engine.ts";
import { TestStore } from "../helpers/test-store.ts";

const TYPE = "fake.Model";

const caller = (name: string, ...roles: Role[]): Caller => ({ name, roles: new Set(roles) });
const alice = caller("alice", "run");
const bob = caller("bob", "run");
const reader = caller("reader", "read");
const auditor = caller("auditor", "read_all");
const ops = caller("ops", "admin");

/** What a client would get: the action as proto3 JSON. */
const seen = (action: Action | undefined) => toJson(ActionSchema, action!) as Record<string, unknown>;
const argJson = (arg: Arg) => toJson(ArgSchema, arg);

describe("an action redacted", () => {
  const bytes = (n: number) => ({ kind: { case: "bytes" as const, value: new Uint8Array(n).fill(115) } });
  const action = create(ActionSchema, {
    id: "a-1",
    createdBy: "alice",
    modelType: TYPE,
    status: ActionStatus.FAILED,
    state: { kind: { case: "structValue", value: { fields: { epoch: { kind: { case: "numberValue", value: 3 } } } } } },
    createTime: timestampFromMs(1_000),
    args: [
      json({ secret: "xxxxxxxxxx" }),
      bytes(5),
      { kind: { case: "tensor", value: { dtype: DType.FLOAT32, shape: [2, 3], data: new Uint8Array(24) } } },
      jsonText([1, 2, 3]),
      { kind: { case: "list", value: { items: [json(1), bytes(3)] } } },
      dataAccess("iris.inputs", [json("path/secret.csv")], { n: json(5) }),
      { kind: { case: "summary", value: { kind: 4, sizeBytes: 90_000n, prefix: '["secret' } } },
    ],
    kwargs: { x: { kind: { case: "map", value: { entries: { a: json("s"), b: bytes(2) } } } } },
    result: { prediction: json(["secret label"]), model: { id: "m-1", revision: 2n } },
    checkpoint: { attempt: 1, size: 13n, value: json({ secret: 1 }) },
    logTail: ["secret line"],
    dataAccess: [
      {
        argument: "args[5]",
        name: "iris.inputs",
        status: ActionStatus.FAILED,
        logTail: ["read secret.csv"],
        error: { code: "plugin_error", message: "Error: no file", stack: "at secret.ts:1" },
      },
    ],
    error: {
      code: "data_access_failed",
      message: "args[5] failed",
      stack: "Error\n    at fit (/home/alice/secret.ts:1:1)",
      details: { kind: { case: "stringValue", value: "secret detail" } },
    },
    attempts: [{ attempt: 1, error: { code: "plugin_error", message: "the first attempt failed" } }],
  });

  test("shows what each argument, the result and the checkpoint are (kind, size, shape, items), never what they hold; no logs, no stacks", () => {
    const shown = redacted(action);
    expect(shown.redacted).toBe(true);
    expect(JSON.stringify(seen(shown))).not.toMatch(/secret|sss/);
    expect(shown.args.map(argJson)).toEqual([
      { summary: { kind: "ARG_KIND_JSON", sizeBytes: "23" } },
      { summary: { kind: "ARG_KIND_BYTES", sizeBytes: "5" } },
      { summary: { kind: "ARG_KIND_TENSOR", sizeBytes: "24", dtype: "D_TYPE_FLOAT32", shape: [2, 3] } },
      { summary: { kind: "ARG_KIND_JSON_TEXT", sizeBytes: "7" } },
      { summary: { kind: "ARG_KIND_LIST", sizeBytes: "4", items: 2 } },
      {
        dataAccess: {
          name: "iris.inputs",
          args: [{ summary: { kind: "ARG_KIND_JSON", sizeBytes: "17" } }],
          kwargs: { n: { summary: { kind: "ARG_KIND_JSON", sizeBytes: "1" } } },
        },
      },
      { summary: { kind: "ARG_KIND_JSON_TEXT", sizeBytes: "90000" } },
    ]);
    expect(argJson(shown.kwargs.x!)).toEqual({ summary: { kind: "ARG_KIND_MAP", sizeBytes: "5", items: 2 } });
    expect(argJson(shown.result!.prediction!)).toEqual({ summary: { kind: "ARG_KIND_JSON", sizeBytes: "16" } });
    expect(argJson(shown.checkpoint!.value!)).toEqual({ summary: { kind: "ARG_KIND_JSON", sizeBytes: "12" } });
    expect(shown.logTail).toEqual([]);
    expect(shown.dataAccess[0]).toMatchObject({ argument: "args[5]", name: "iris.inputs", logTail: [], error: { code: "plugin_error", stack: "" } });
    expect(shown.error).toMatchObject({ code: "data_access_failed", message: "args[5] failed", stack: "" });
    expect(shown.error!.details).toBeUndefined();
  });

  test("keeps its status, progress, times, model, attempts and who started it", () => {
    const shown = seen(redacted(action));
    const full = seen(action);
    for (const key of ["id", "createdBy", "modelType", "status", "state", "createTime", "attempts"]) expect(shown[key]).toEqual(full[key]);
    expect(shown.result).toMatchObject({ model: { id: "m-1", revision: "2" } });
    expect(shown.checkpoint).toMatchObject({ attempt: 1, size: "13" });
  });
});

describe("the engine's reads", () => {
  let store: TestStore;
  let calls: FakePluginCalls;
  let engine: Engine | undefined;
  let streams: AbortController;

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

  const open = async (visibility?: "own" | "all") => {
    engine = await openFastEngine({
      store,
      processes: calls,
      plugins: pluginRegistry([TYPE]),
      ...(visibility ? { server: { auth: { visibility } } } : {}),
    });
    return engine;
  };

  /** A stream read in the background: what came so far. */
  function follow<T>(items: AsyncIterable<T>): T[] {
    const got: T[] = [];
    void (async () => {
      try {
        for await (const item of items) got.push(item);
      } catch {
        // Ended by the test's abort.
      }
    })();
    return got;
  }

  const actionsIn = (messages: WatchStateResponse[], id: string): Action[] =>
    messages.flatMap(({ event }) =>
      event.case === "snapshot"
        ? event.value.actions.filter((a) => a.id === id)
        : event.case === "actionUpserted" && event.value.id === id
          ? [event.value]
          : [],
    );

  /**
   * Alice's predict of {rows: "secret rows"}, followed by `viewer` in every read there is:
   * WatchState and WatchAction from before it ends, WaitAction, then GetAction in each view,
   * ListActions in FULL and GetState.
   */
  async function readsOf(e: Engine, viewer: Caller): Promise<Action[]> {
    const model = await e.addInstance(TYPE, new Uint8Array([1]));
    const before = e.stats.revision;
    const predicted = await e.predict(model.id, request([{ rows: "secret rows" }]), alice);
    const states = follow(e.watchState({ from: 0n, filter: { modelIds: [], actionIds: [], kinds: [] } }, streams.signal, viewer));
    const updates = follow(e.watchAction(predicted.id, streams.signal, viewer));
    const waited = e.waitAction(predicted.id, ActionView.FULL, undefined, viewer);
    await settle();
    calls.of(predicted.id).report({ progress: 0.5 });
    await settle();
    calls.of(predicted.id).finish({ value: { label: "secret label" } });
    const reads = [await waited];
    await settle();
    for (const view of [ActionView.BASIC, ActionView.RESULT, ActionView.FULL]) reads.push(await e.getAction(predicted.id, view, viewer));
    const listed = (await e.listActions({ modelId: "", statuses: [], pageSize: 10, pageToken: "", view: ActionView.FULL }, viewer)).actions;
    const live = e.getState("", viewer).actions;
    expect([listed.map((a) => a.id), live.map((a) => a.id)]).toEqual([[predicted.id], [predicted.id]]);
    reads.push(...listed, ...live);
    // A stream resumed from a revision before it: what changed since, not a snapshot.
    const resumed = follow(e.watchState({ from: before, filter: { modelIds: [], actionIds: [], kinds: [] } }, streams.signal, viewer));
    await settle();
    expect(resumed.some(({ event }) => event.case === "snapshot")).toBe(false);
    expect(actionsIn(resumed, predicted.id)).toHaveLength(1);
    const streamed = [...actionsIn(states, predicted.id), ...updates, ...actionsIn(resumed, predicted.id)];
    expect(streamed.length).toBeGreaterThanOrEqual(3);
    expect(streamed.at(-1)!.status).toBe(ActionStatus.SUCCEEDED);
    return [...reads, ...streamed];
  }

  test.each([
    ["read", reader],
    ["run (bob)", bob],
  ])(
    "a caller who may not see others' in full (%s) gets alice's action redacted in every read, its status and progress as they are",
    async (_, viewer) => {
      const reads = await readsOf(await open(), viewer);
      for (const action of reads) {
        expect(action.redacted).toBe(true);
        expect(JSON.stringify(seen(action))).not.toContain("secret");
      }
      expect(reads[0]).toMatchObject({ status: ActionStatus.SUCCEEDED, createdBy: "alice" });
      expect(argJson(reads[0]!.args[0]!)).toEqual({ summary: { kind: "ARG_KIND_JSON", sizeBytes: "22" } });
      expect(argJson(reads[0]!.result!.prediction!)).toEqual({ summary: { kind: "ARG_KIND_JSON", sizeBytes: "24" } });
      // The reported state is progress, not data: it stays.
      expect(reads.some((a) => JSON.stringify(seen(a).state) === '{"progress":0.5}')).toBe(true);
    },
  );

  test.each([
    ["alice herself", alice, "own"],
    ["admin", ops, "own"],
    ["read_all", auditor, "own"],
    ["read, with visibility all", reader, "all"],
  ] as const)("%s sees alice's action in full", async (_, viewer, visibility) => {
    const reads = await readsOf(await open(visibility), viewer);
    for (const action of reads) expect(action.redacted).toBe(false);
    const full = reads[0]!;
    expect(toJson(ArgSchema, full.args[0]!)).toEqual({ json: { rows: "secret rows" } });
    expect(toJson(ArgSchema, full.result!.prediction!)).toEqual({ json: { label: "secret label" } });
  });

  test("a failed action's error keeps its code and message for others, not its stack; a cancel of another's ended action answers it redacted", async () => {
    const e = await open();
    const model = await e.addInstance(TYPE, new Uint8Array([1]));
    const failing = await e.predict(model.id, request([1]), alice);
    await settle();
    calls
      .of(failing.id)
      .fail(new ChildFailure("plugin_error", "Error: the plugin failed", "Error: the plugin failed\n    at predict (secret.ts:3:9)"));
    await settle();
    const own = await e.getAction(failing.id, ActionView.FULL, alice);
    expect(own.error).toMatchObject({ code: "plugin_error", stack: expect.stringContaining("secret.ts") });
    const other = await e.getAction(failing.id, ActionView.FULL, reader);
    expect(other.error).toMatchObject({ code: "plugin_error", message: own.error!.message, stack: "" });
    const cancelled = await e.cancelAction(failing.id, bob);
    expect(cancelled).toMatchObject({ redacted: true, status: ActionStatus.FAILED });
    expect(cancelled.args.map(argJson)).toEqual([{ summary: { kind: "ARG_KIND_JSON", sizeBytes: "1" } }]);
  });

  test("bob sees his own in full beside alice's redacted, in one stream", async () => {
    const e = await open();
    const model = await e.addInstance(TYPE, new Uint8Array([1]));
    const states = follow(e.watchState({ from: 0n, filter: { modelIds: [], actionIds: [], kinds: [] } }, streams.signal, bob));
    const ofAlice = await e.predict(model.id, request(["alice's"]), alice);
    const ofBob = await e.predict(model.id, request(["bob's"]), bob);
    await settle();
    const last = (id: string) => actionsIn(states, id).at(-1)!;
    expect(last(ofAlice.id).redacted).toBe(true);
    expect(last(ofBob.id).redacted).toBe(false);
    expect(toJson(ArgSchema, last(ofBob.id).args[0]!) as JsonValue).toEqual({ json: "bob's" });
  });
});
