/**
 * A real child runs batched predicts, on Node and Deno, driven over its pipe as the server
 * drives it: each item answered on its own in the Result, per-item progress, CancelItems
 * while the batch runs, a batch on a resident instance, a run that returns the wrong
 * number of results, and plugins whose batch cannot be served refused at load.
 */
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema as JsonSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type BatchItemSchema, CallKind, type CallSchema, type ItemOutcome, type WorkerMessage } from "../gen/plinth/worker/v1/worker_pb.ts";
import type { JsonValue } from "../sdk/mod.ts";
import { decodeValue, encodeValue } from "../sdk/worker/codec.ts";
import { batchRefusals } from "./fixtures/failing/batch-refusals.ts";
import type { BatchServed } from "./fixtures/plugins/serving.ts";
import { fixture, root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";
import { WorkerPipe, workerCommand } from "./helpers/worker-pipe.ts";

const MAX_FRAME = String(64 * 1024 * 1024);
const RESIDENT_BYTES = String(1024 * 1024);

/** Where gate files go: inside the repository, which a Deno child may read. */
const gates = () => tempDir("plinth-gates-", join(root, "test-artifacts"));

const pipes: WorkerPipe[] = [];
afterEach(async () => {
  for (const pipe of pipes.splice(0)) await pipe.close();
});

/** One child per runtime for the tests that leave it as they found it (a Node child takes seconds to start). */
const shared = new Map<"node" | "deno", Promise<{ pipe: WorkerPipe; hello: WorkerMessage }>>();
afterAll(async () => {
  for (const child of shared.values()) await (await child).pipe.close();
});

function startShared(runtime: "node" | "deno"): Promise<{ pipe: WorkerPipe; hello: WorkerMessage }> {
  let child = shared.get(runtime);
  if (!child) {
    child = (async () => {
      const pipe = new WorkerPipe(workerCommand(runtime, fixture("serving.ts"), [MAX_FRAME, "50", RESIDENT_BYTES]));
      const hello = await pipe.next();
      expect(hello.kind.case, pipe.stderr).toBe("hello");
      return { pipe, hello };
    })();
    shared.set(runtime, child);
  }
  return child;
}

function spawnChild(runtime: "node" | "deno", module: string): WorkerPipe {
  const pipe = new WorkerPipe(workerCommand(runtime, module, [MAX_FRAME, "50", RESIDENT_BYTES]));
  pipes.push(pipe);
  return pipe;
}

/** A child of the serving fixture, past its hello, and the hello. */
async function start(runtime: "node" | "deno"): Promise<{ pipe: WorkerPipe; hello: WorkerMessage }> {
  const pipe = spawnChild(runtime, fixture("serving.ts"));
  const hello = await pipe.next();
  expect(hello.kind.case, pipe.stderr).toBe("hello");
  return { pipe, hello };
}

/** The batched model types' instance, as their (JSON) serialize makes it. */
const EMPTY = new TextEncoder().encode("{}");

let calls = 0;

type Item = { args?: JsonValue[]; kwargs?: Record<string, JsonValue> };

/** A batch call of `items` (item ids i0, i1, ...) on (model, revision): with the instance's bytes, or resident. */
function batch(
  target: string,
  items: Item[],
  options: { modelId?: string; revision?: number; resident?: boolean } = {},
): MessageInitShape<typeof CallSchema> & { callId: string } {
  const batchItems: MessageInitShape<typeof BatchItemSchema>[] = items.map((item, i) => ({
    itemId: `i${i}`,
    actionId: `a${i}`,
    args: (item.args ?? []).map((v) => encodeValue(v)),
    kwargs: Object.fromEntries(Object.entries(item.kwargs ?? {}).map(([k, v]) => [k, encodeValue(v)])),
  }));
  return {
    callId: `c${++calls}`,
    kind: CallKind.PREDICT,
    target,
    modelId: options.modelId ?? "m",
    revision: BigInt(options.revision ?? 1),
    resident: options.resident ?? false,
    instance: options.resident ? new Uint8Array() : EMPTY,
    items: batchItems,
  };
}

/** A call's progress frames as [item id, state], and its answer. */
interface Answer {
  progress: [string, JsonValue][];
  answer: WorkerMessage["kind"];
}

/** Reads frames up to the call's result or failure. */
async function answer(pipe: WorkerPipe): Promise<Answer> {
  const progress: [string, JsonValue][] = [];
  for (;;) {
    const { kind } = await pipe.next();
    if (kind.case === "progress") progress.push([kind.value.itemId, toJson(JsonSchema, kind.value.state!) as JsonValue]);
    else if (kind.case === "result" || kind.case === "failure") return { progress, answer: kind };
    else throw new Error(`unexpected ${kind.case}`);
  }
}

/** Reads frames until a progress frame passes `test`; fails on a result or failure first. */
async function progressUntil(pipe: WorkerPipe, test: (itemId: string, state: JsonValue) => boolean): Promise<void> {
  for (;;) {
    const { kind } = await pipe.next();
    if (kind.case !== "progress") throw new Error(`expected progress, got ${kind.case}${kind.case === "failure" ? `: ${kind.value.message}` : ""}`);
    if (test(kind.value.itemId, toJson(JsonSchema, kind.value.state!) as JsonValue)) return;
  }
}

/** A batch Result's outcomes by item id: the value decoded, or the failure's fields. */
function outcomes(answer: WorkerMessage["kind"]): Record<string, unknown> {
  if (answer.case !== "result")
    throw new Error(`expected a result, got ${answer.case}${answer.case === "failure" ? `: ${answer.value.message}` : ""}`);
  expect(answer.value.value).toBeUndefined();
  expect(answer.value.instance).toBeUndefined();
  return Object.fromEntries(
    answer.value.items.map((item: ItemOutcome) => {
      const { outcome } = item;
      if (outcome.case === "value") return [item.itemId, decodeValue(outcome.value)];
      if (outcome.case === "failure") return [item.itemId, { name: outcome.value.name, code: outcome.value.code, message: outcome.value.message }];
      return [item.itemId, "no outcome"];
    }),
  );
}

describe.each(["node", "deno"] as const)("a %s child's batched predicts", (runtime) => {
  it("says in its hello which model types are batched, with their size and wait", async () => {
    const { hello } = await startShared(runtime);
    if (hello.kind.case !== "hello") throw new Error("no hello");
    const serving = Object.fromEntries(hello.kind.value.manifest!.modelTypes.map((m) => [m.name, m.serving]));
    expect(serving["serving.Batched16"]).toMatchObject({ concurrent: true, batchMaxSize: 16, batchMaxWaitMs: 600_000 });
    expect(serving["serving.Quick"]).toMatchObject({ concurrent: true, batchMaxSize: 8, batchMaxWaitMs: 20 });
    expect(serving["serving.Gated"]).toMatchObject({ concurrent: true, batchMaxSize: 0, batchMaxWaitMs: 0 });
    expect(serving["serving.Mutator"]).toMatchObject({ concurrent: false, batchMaxSize: 0 });
  });

  it("a batch of 16 with one poisoned item: 15 values and one failure with its PluginError code; each item's progress carries its item id", async () => {
    const { pipe } = await startShared(runtime);
    const items: Item[] = Array.from({ length: 16 }, (_, i) => ({ args: [i * 10] }));
    items[5] = { args: [50], kwargs: { poison: true } };
    items[7] = { args: [70], kwargs: { report: "seven" } };
    pipe.send({ kind: { case: "call", value: batch("serving.Batched16", items) } });
    const { progress, answer: result } = await answer(pipe);
    expect(progress).toEqual([["i7", { item: "seven" }]]);
    const expected: Record<string, unknown> = {};
    const pid = pipe.process.pid!;
    for (let i = 0; i < 16; i++) expected[`i${i}`] = { pid, size: 16, index: i, value: i * 10 } satisfies BatchServed;
    expected.i5 = { name: "PluginError", code: "invalid_argument", message: "poisoned item" };
    expect(outcomes(result)).toEqual(expected);
  });

  it("an item whose arguments do not decode fails alone, without reaching run", async () => {
    const { pipe } = await startShared(runtime);
    const call = batch("serving.Quick", [{ args: [1] }, { args: [2] }, { args: [3] }]);
    call.items![1]!.args = [{ kind: { case: "jsonText", value: "{" } }];
    pipe.send({ kind: { case: "call", value: call } });
    const { pid } = pipe.process;
    expect(outcomes((await answer(pipe)).answer)).toEqual({
      i0: { pid, size: 2, index: 0, value: 1 },
      i1: { name: "PluginError", code: "invalid_argument", message: expect.stringContaining("argument args[0]: json_text is not valid JSON") },
      i2: { pid, size: 2, index: 1, value: 3 },
    });
  });

  it("CancelItems for one of four gated items aborts its signal at once; the others finish once the gate opens, and the Result answers all four", async () => {
    const { pipe } = await start(runtime);
    const gate = join(gates(), "gate");
    const call = batch(
      "serving.Batched4",
      [0, 1, 2, 3].map((i) => ({ args: [i], kwargs: { gate, report: "gated" } })),
    );
    pipe.send({ kind: { case: "call", value: call } });
    // Every item has started: each reported before waiting on the gate.
    const started = new Set<string>();
    await progressUntil(pipe, (itemId) => started.add(itemId).size === 4);
    // Another call's id changes nothing; this call's item 2 aborts, and says so while the others still wait.
    pipe.send(
      { kind: { case: "cancelItems", value: { callId: "not-this-call", itemIds: ["i1"] } } },
      { kind: { case: "cancelItems", value: { callId: call.callId, itemIds: ["i2"] } } },
    );
    const aborted: string[] = [];
    await progressUntil(pipe, (itemId, state) => {
      if ((state as { aborted?: boolean }).aborted) aborted.push(itemId);
      return itemId === "i2";
    });
    expect(aborted).toEqual(["i2"]);
    writeFileSync(gate, "");
    const { progress, answer: result } = await answer(pipe);
    expect(progress).toEqual([]);
    const { pid } = pipe.process;
    expect(outcomes(result)).toEqual({
      i0: { pid, size: 4, index: 0, value: 0 },
      i1: { pid, size: 4, index: 1, value: 1 },
      i2: { name: "AbortError", code: "", message: "the action was cancelled" },
      i3: { pid, size: 4, index: 3, value: 3 },
    });
  });

  it("SIGTERM during a batch aborts every item's signal: each item fails AbortError, and the child exits 143", async () => {
    const { pipe } = await start(runtime);
    const gate = join(gates(), "never");
    pipe.send({
      kind: { case: "call", value: batch("serving.Batched4", [{ kwargs: { gate, report: "gated" } }, { kwargs: { gate, report: "gated" } }]) },
    });
    const started = new Set<string>();
    await progressUntil(pipe, (itemId) => started.add(itemId).size === 2);
    const exited = once(pipe.process, "exit");
    pipe.process.kill("SIGTERM");
    const { answer: result } = await answer(pipe);
    const cancelled = { name: "AbortError", code: "", message: "the action was cancelled" };
    expect(outcomes(result)).toEqual({ i0: cancelled, i1: cancelled });
    expect((await exited)[0]).toBe(143);
  });

  it("runs a batch on the instance it holds (no bytes), keeping the one it loaded; a revision it does not hold is ResidentMissing", async () => {
    const { pipe } = await start(runtime);
    const { pid } = pipe.process;
    pipe.send({ kind: { case: "call", value: batch("serving.Quick", [{ args: ["a"] }], { modelId: "m", revision: 1 }) } });
    const cold = (await answer(pipe)).answer;
    expect(cold.case === "result" && cold.value.kept).toEqual([expect.objectContaining({ modelId: "m", revision: 1n })]);
    pipe.send({
      kind: { case: "call", value: batch("serving.Quick", [{ args: ["b"] }, { args: ["c"] }], { modelId: "m", revision: 1, resident: true }) },
    });
    const warm = (await answer(pipe)).answer;
    expect(outcomes(warm)).toEqual({ i0: { pid, size: 2, index: 0, value: "b" }, i1: { pid, size: 2, index: 1, value: "c" } });
    expect(warm.case === "result" && [warm.value.dropped, warm.value.kept]).toEqual([[], []]);

    pipe.send({ kind: { case: "call", value: batch("serving.Quick", [{ args: ["d"] }], { modelId: "m", revision: 2, resident: true }) } });
    const missing = (await answer(pipe)).answer;
    expect(missing).toMatchObject({
      case: "failure",
      value: { name: "ResidentMissing", message: expect.stringContaining("model m revision 2 is not resident") },
    });
  });

  it("a run that returns the wrong number of results fails the whole call with one Failure that says how many for how many; the child serves on", async () => {
    const { pipe } = await startShared(runtime);
    const call = batch("serving.BadCount", [{}, {}, {}, {}]);
    pipe.send({ kind: { case: "call", value: call } });
    const { answer: failed } = await answer(pipe);
    expect(failed).toMatchObject({
      case: "failure",
      value: { callId: call.callId, name: "TypeError", message: "predict of serving.BadCount returned 3 results for 4 items" },
    });
    pipe.send({ kind: { case: "call", value: batch("serving.Batched4", [{ args: [1] }]) } });
    expect(outcomes((await answer(pipe)).answer)).toEqual({ i0: { pid: pipe.process.pid, size: 1, index: 0, value: 1 } });
  });

  it("refuses to load a plugin whose batch cannot be served: its first frame is a failure naming the key, and it exits", async () => {
    // Every refusal on Deno (its children start in a fraction of a second); two on Node, whose
    // children start in seconds: the check is the SDK's, the same on both (and each is in sdk.test.ts).
    const refusals = runtime === "deno" ? batchRefusals : batchRefusals.filter(([file]) => file === "batch-size-0.ts" || file === "batch-on-fit.ts");
    expect(refusals.length).toBeGreaterThanOrEqual(2);
    await Promise.all(
      refusals.map(async ([file, message]) => {
        const pipe = spawnChild(runtime, join(root, "test/fixtures/failing", file));
        const exited = once(pipe.process, "exit");
        const first = await pipe.next();
        expect(first.kind, file).toMatchObject({ case: "failure", value: { callId: "", name: "TypeError", message } });
        expect((await exited)[0], file).toBe(1);
      }),
    );
  });
});
