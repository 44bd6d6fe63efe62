/**
 * A real child keeps instances between calls (resident), on Node and Deno, driven over
 * its pipe as the server drives it: a warm predict that brings no bytes, ResidentMissing,
 * Forget, eviction within its budget, fits and predicts that make a new revision, and
 * the deltas each answer carries.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { CallKind, type CallSchema } from "../gen/plinth/worker/v1/worker_pb.ts";
import { decodeValue, encodeValue } from "../sdk/worker/codec.ts";
import type { Served } from "./fixtures/plugins/serving.ts";
import { fixture } from "./helpers/server.ts";
import { WorkerPipe, workerCommand } from "./helpers/worker-pipe.ts";

/** Each instance's serialized size: the budgets below are counted in them. */
const SIZE = 1024;
const MAX_FRAME = String(64 * 1024 * 1024);

const pipes: WorkerPipe[] = [];
afterEach(async () => {
  for (const pipe of pipes.splice(0)) await pipe.close();
});

/** A child of the serving fixture, past its hello; `budget` undefined: started without the argument. */
async function start(runtime: "node" | "deno", budget: number | undefined): Promise<WorkerPipe> {
  const tail = budget === undefined ? [MAX_FRAME, "50"] : [MAX_FRAME, "50", String(budget)];
  const pipe = new WorkerPipe(workerCommand(runtime, fixture("serving.ts"), tail));
  pipes.push(pipe);
  const hello = await pipe.next();
  expect(hello.kind.case, pipe.stderr).toBe("hello");
  return pipe;
}

/** serving.Weights' instance of `bytes` bytes, as its serialize makes it (no fits yet). */
const weights = (bytes = SIZE) => new Uint8Array(new Float64Array(bytes / 8).buffer);

let calls = 0;

/** A predict on (model, revision): with the instance's bytes, or resident (no bytes) when none are given. */
function predict(
  modelId: string,
  revision: number,
  options: { bytes?: Uint8Array; kwargs?: Record<string, boolean>; nextRevision?: number } = {},
): MessageInitShape<typeof CallSchema> {
  return {
    callId: `c${++calls}`,
    kind: CallKind.PREDICT,
    target: "serving.Weights",
    modelId,
    revision: BigInt(revision),
    resident: options.bytes === undefined,
    instance: options.bytes ?? new Uint8Array(),
    kwargs: Object.fromEntries(Object.entries(options.kwargs ?? {}).map(([k, v]) => [k, encodeValue(v)])),
    nextRevision: BigInt(options.nextRevision ?? 0),
  };
}

/** The answer to the next call, with its deltas as "model@revision". */
interface Answer {
  answer: "result" | "failure";
  served?: Served;
  instance?: Uint8Array | undefined;
  name?: string;
  message?: string;
  dropped: string[];
  kept: string[];
}

const ref = (modelId: string, revision: number) => ({ modelId, revision: BigInt(revision) });
const names = (refs: { modelId: string; revision: bigint }[]) => refs.map((r) => `${r.modelId}@${r.revision}`);

async function answer(pipe: WorkerPipe): Promise<Answer> {
  for (;;) {
    const { kind } = await pipe.next();
    if (kind.case === "result") {
      const { value, instance, dropped, kept } = kind.value;
      return { answer: "result", served: decodeValue(value) as Served, instance, dropped: names(dropped), kept: names(kept) };
    }
    if (kind.case === "failure") {
      const { name, message, dropped, kept } = kind.value;
      return { answer: "failure", name, message, dropped: names(dropped), kept: names(kept) };
    }
    if (kind.case !== "progress") throw new Error(`unexpected ${kind.case}`);
  }
}

function ask(pipe: WorkerPipe, call: MessageInitShape<typeof CallSchema>): Promise<Answer> {
  pipe.send({ kind: { case: "call", value: call } });
  return answer(pipe);
}

const missing = (modelId: string, revision: number) => ({
  answer: "failure",
  name: "ResidentMissing",
  message: expect.stringContaining(`model ${modelId} revision ${revision} is not resident`),
  dropped: [],
  kept: [],
});

describe.each(["node", "deno"] as const)("a %s child's resident instances", (runtime) => {
  it("a predict from bytes, then the same resident: the same answer, one deserialize; a revision it does not hold is ResidentMissing, and it serves on", async () => {
    const pipe = await start(runtime, 4 * SIZE);
    const cold = await ask(pipe, predict("m1", 1, { bytes: weights() }));
    expect(cold).toMatchObject({ answer: "result", dropped: [], kept: ["m1@1"] });
    expect(cold.served).toEqual({ pid: pipe.process.pid, loads: 1, fits: 0, size: SIZE });
    const warm = await ask(pipe, predict("m1", 1));
    expect(warm).toEqual({ ...cold, kept: [] });

    expect(await ask(pipe, predict("m1", 2))).toEqual(missing("m1", 2));
    expect(await ask(pipe, predict("other", 1))).toEqual(missing("other", 1));
    // The server sends it again with the bytes, to the same child.
    const sent = await ask(pipe, predict("m1", 2, { bytes: weights() }));
    expect(sent).toMatchObject({ answer: "result", served: { loads: 2 }, dropped: [], kept: ["m1@2"] });
    // A predict that throws keeps what the child holds.
    expect(await ask(pipe, predict("m1", 1, { kwargs: { fail: true } }))).toMatchObject({ answer: "failure", name: "Error", dropped: [], kept: [] });
    expect(await ask(pipe, predict("m1", 1))).toMatchObject({ answer: "result", served: { loads: 2 } });
  });

  it("Forget drops those instances without an answer, in order with the calls around it", async () => {
    const pipe = await start(runtime, 4 * SIZE);
    expect(await ask(pipe, predict("m2", 1, { bytes: weights() }))).toMatchObject({ kept: ["m2@1"] });
    // In one write: the Forget waits for the call before it, the resident call for the Forget.
    pipe.send(
      { kind: { case: "call", value: predict("m1", 1, { bytes: weights() }) } },
      { kind: { case: "forget", value: { refs: [ref("m1", 1), ref("never", 9)] } } },
      { kind: { case: "call", value: predict("m1", 1) } },
    );
    expect(await answer(pipe)).toMatchObject({ answer: "result", dropped: [], kept: ["m1@1"] });
    expect(await answer(pipe)).toEqual(missing("m1", 1));
    // The other model's revision is still held.
    expect(await ask(pipe, predict("m2", 1))).toMatchObject({ answer: "result", served: { loads: 2 }, dropped: [], kept: [] });
  });

  it("within a small budget the least recently used goes first, reported as dropped; one larger than the budget is never kept", async () => {
    const pipe = await start(runtime, 2.5 * SIZE);
    expect(await ask(pipe, predict("a", 1, { bytes: weights() }))).toMatchObject({ dropped: [], kept: ["a@1"] });
    expect(await ask(pipe, predict("b", 1, { bytes: weights() }))).toMatchObject({ dropped: [], kept: ["b@1"] });
    expect(await ask(pipe, predict("a", 1))).toMatchObject({ answer: "result", dropped: [], kept: [] });
    // b is now the least recently used.
    expect(await ask(pipe, predict("c", 1, { bytes: weights() }))).toMatchObject({ served: { loads: 3 }, dropped: ["b@1"], kept: ["c@1"] });
    expect(await ask(pipe, predict("b", 1))).toEqual(missing("b", 1));
    expect(await ask(pipe, predict("a", 1))).toMatchObject({ answer: "result", served: { loads: 3 } });

    const big = await ask(pipe, predict("big", 1, { bytes: weights(4 * SIZE) }));
    expect(big).toMatchObject({ answer: "result", served: { size: 4 * SIZE, loads: 4 }, dropped: [], kept: [] });
    expect(await ask(pipe, predict("big", 1))).toEqual(missing("big", 1));
    expect(await ask(pipe, predict("c", 1))).toMatchObject({ answer: "result", served: { loads: 4 }, dropped: [], kept: [] });
  });

  it("a fit takes its instance out and keeps what it returns under next_revision, loaded at its first use; so does a predict that returns withInstance", async () => {
    const pipe = await start(runtime, 4 * SIZE);
    expect(await ask(pipe, predict("m", 1, { bytes: weights() }))).toMatchObject({ kept: ["m@1"] });
    const fit = await ask(pipe, {
      callId: `c${++calls}`,
      kind: CallKind.FIT,
      target: "serving.Weights",
      modelId: "m",
      revision: 1n,
      resident: true,
      nextRevision: 2n,
    });
    expect(fit).toMatchObject({ answer: "result", dropped: ["m@1"], kept: ["m@2"] });
    expect(new Float64Array(new Uint8Array(fit.instance!).buffer)[0]).toBe(1);
    expect(await ask(pipe, predict("m", 1))).toEqual(missing("m", 1));
    expect(await ask(pipe, predict("m", 2))).toMatchObject({ served: { fits: 1, loads: 2 }, dropped: [], kept: [] });
    expect(await ask(pipe, predict("m", 2))).toMatchObject({ served: { fits: 1, loads: 2 } });

    const stored = await ask(pipe, predict("m", 2, { kwargs: { store: true }, nextRevision: 3 }));
    expect(stored).toMatchObject({ answer: "result", served: { fits: 1 }, dropped: ["m@2"], kept: ["m@3"] });
    expect(stored.instance?.byteLength).toBe(SIZE);
    expect(await ask(pipe, predict("m", 3))).toMatchObject({ served: { fits: 2, loads: 3 }, dropped: [], kept: [] });
    expect(await ask(pipe, predict("m", 2))).toEqual(missing("m", 2));
  });
});

it("a child started without a resident budget (as before it had one) keeps nothing", async () => {
  const pipe = await start("node", undefined);
  expect(await ask(pipe, predict("m", 1, { bytes: weights() }))).toMatchObject({ answer: "result", dropped: [], kept: [] });
  expect(await ask(pipe, predict("m", 1))).toEqual(missing("m", 1));
});
