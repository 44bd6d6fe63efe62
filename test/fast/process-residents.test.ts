/**
 * The ProcessManager's books of what each child holds resident, with fake children (its
 * `launch` seam) that say what they kept and dropped when the test says so: where a call
 * on a model goes, when its bytes are read, and when children are told to forget.
 */
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { CallKind, ValueSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { ChildFailure } from "../../server/process/child.ts";
import {
  type CallOutcome,
  type ModelRef,
  ProcessManager,
  type ProcessManagerOptions,
  type ResidentKey,
} from "../../server/process/process-manager.ts";
import type { PluginTarget } from "../../server/process/runtimes.ts";
import { type FakeChild, FakeChildren, fakeManagerOptions } from "../helpers/fake-child.ts";
import { settle, type Tracked, track } from "../helpers/fast-engine.ts";

vi.setConfig({ testTimeout: 10_000 });

const MiB = 2 ** 20;
const A: PluginTarget = { module: "/fake/a.ts", runtime: "node", label: "a.ts", key: "plugins[0]", residentMb: 1 };

let children: FakeChildren;
const managers: ProcessManager[] = [];

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"] });
  children = new FakeChildren();
});

afterEach(async () => {
  children.killAll();
  for (const manager of managers.splice(0)) await manager.close();
  vi.useRealTimers();
});

function open(options: Partial<ProcessManagerOptions> = {}): ProcessManager {
  const manager = new ProcessManager(fakeManagerOptions(children, { maxChildren: 3, maxFrameBytes: 64 * MiB, ...options }));
  managers.push(manager);
  return manager;
}

/** A model's revision whose bytes() counts how often it was read. */
interface CountedModel extends ModelRef {
  reads: number;
}

function model(modelId: string, revision: bigint, size = 100): CountedModel {
  const counted: CountedModel = {
    modelId,
    revision,
    size,
    reads: 0,
    bytes: () => {
      counted.reads++;
      return Promise.resolve(new Uint8Array(size).fill(Number(revision)));
    },
  };
  return counted;
}

const ref = (m: ResidentKey): ResidentKey => ({ modelId: m.modelId, revision: m.revision });

interface Started extends Tracked<CallOutcome> {
  readonly pid: number | undefined;
}

/** A predict on `on`, tagged `tag` (its first argument); `nextRevision` when it may return an instance. */
function start(manager: ProcessManager, tag: string, on: ModelRef, nextRevision?: bigint): Started {
  const value = create(ValueSchema, { kind: { case: "jsonUtf8", value: new TextEncoder().encode(JSON.stringify(tag)) } });
  let pid: number | undefined;
  const call = { kind: CallKind.PREDICT, target: "fake.Model", model: on, nextRevision, args: [value], kwargs: {} };
  const tracked = track(manager.call(A, call, { onStart: (p) => (pid = p) }));
  return Object.defineProperty(tracked, "pid", { get: () => pid }) as Started;
}

/** The child running `tag` once every child has said hello. */
async function running(tag: string): Promise<FakeChild> {
  children.helloAll();
  await settle();
  return children.running(tag);
}

/** Runs a call on `on` to its end; the child answers with what it kept and dropped. Returns the child. */
async function serve(
  manager: ProcessManager,
  tag: string,
  on: ModelRef,
  residents: { kept?: ResidentKey[]; dropped?: ResidentKey[] } = {},
): Promise<FakeChild> {
  const call = start(manager, tag, on);
  const child = await running(tag);
  child.answer(tag, residents);
  await settle();
  expect(call.value).toBeDefined();
  return child;
}

describe("ProcessManager residents", () => {
  test("a call on a model goes to an idle child holding it, without its bytes; else to the idle child holding least, with them", async () => {
    const m = open();
    const [x, y, w] = [model("x", 1n, 100), model("y", 1n, 300), model("w", 1n)];
    const sends: [boolean, number][] = [];
    m.events.on("instance", (resident, bytes) => sends.push([resident, bytes]));
    // Three children: the first keeps x, the second y, the third nothing; the third answered last.
    const calls = [start(m, "c1", x), start(m, "c2", y), start(m, "c3", w)];
    const [first, second, third] = [await running("c1"), await running("c2"), await running("c3")];
    first.answer("c1", { kept: [ref(x)] });
    second.answer("c2", { kept: [ref(y)] });
    third.answer("c3");
    await settle();
    expect(calls.every((c) => c.done)).toBe(true);
    expect([m.residentBytes(), [...m.held()].sort()]).toEqual([400, ["x", "y"]]);
    expect(first.calls[0]).toMatchObject({ modelId: "x", revision: 1n, resident: false, instance: new Uint8Array(100).fill(1), nextRevision: 0n });

    // x's holder, though another child was used more recently.
    const again = start(m, "x again", x);
    await settle();
    expect(again.pid).toBe(first.pid);
    expect(first.current).toMatchObject({ modelId: "x", revision: 1n, resident: true });
    expect(first.current?.instance).toBeUndefined();
    first.answer("x again");
    await settle();
    expect(x.reads).toBe(1);

    // A model no child holds: the idle child holding least (the third), not the one used last (the first).
    const other = start(m, "w again", w);
    await settle();
    expect(other.pid).toBe(third.pid);
    expect(third.current).toMatchObject({ modelId: "w", resident: false });
    third.answer("w again");
    await settle();
    expect(w.reads).toBe(2);

    // x's holder busy: another idle child takes the call, with the bytes.
    const busy = start(m, "x busy", x);
    const beside = start(m, "x beside", x);
    await settle();
    expect(busy.pid).toBe(first.pid);
    expect(beside.pid).not.toBe(first.pid);
    expect(children.running("x beside").current).toMatchObject({ resident: false });
    expect(x.reads).toBe(2);
    expect(children.all).toHaveLength(3);
    expect(sends).toEqual([
      [false, 100],
      [false, 300],
      [false, 100],
      [true, 0],
      [false, 100],
      [true, 0],
      [false, 100],
    ]);
  });

  test("the books follow what each answer says the child kept and dropped, a fit's new revision sized by the instance it returned", async () => {
    const m = open({ maxChildren: 1 });
    const [a1, b1] = [model("a", 1n, 100), model("b", 1n, 200)];
    await serve(m, "a", a1, { kept: [ref(a1)] });
    expect([m.residentBytes(), [...m.held()]]).toEqual([100, ["a"]]);
    // Its budget full, the child let a go for b.
    await serve(m, "b", b1, { kept: [ref(b1)], dropped: [ref(a1)] });
    expect([m.residentBytes(), [...m.held()]]).toEqual([200, ["b"]]);
    const back = start(m, "a back", a1);
    const child = await running("a back");
    expect(child.current).toMatchObject({ modelId: "a", resident: false });
    child.answer("a back");
    await settle();
    expect(back.done).toBe(true);

    // A fit on b: it took revision 1 out, and keeps what it returned (50 bytes) as revision 2.
    const fit = start(m, "fit b", b1, 2n);
    await settle();
    expect(child.current).toMatchObject({ modelId: "b", revision: 1n, resident: true, nextRevision: 2n });
    child.answer("fit b", { instance: new Uint8Array(50), kept: [{ modelId: "b", revision: 2n }], dropped: [ref(b1)] });
    await settle();
    expect(fit.done).toBe(true);
    expect(m.residentBytes()).toBe(50);
    const b2 = model("b", 2n, 50);
    await serve(m, "b2", b2);
    expect(child.calls.at(-1)).toMatchObject({ modelId: "b", revision: 2n, resident: true });
    expect(b2.reads).toBe(0);
    expect(children.all).toHaveLength(1);
  });

  test("forget: an idle child is told at once; a busy one once its call has ended and its answer is in the books", async () => {
    const m = open({ maxChildren: 2 });
    const [x1, x2, y1] = [model("x", 1n), model("x", 2n), model("y", 1n)];
    const calls = [start(m, "c1", x1), start(m, "c2", x2)];
    const [first, second] = [await running("c1"), await running("c2")];
    first.answer("c1", { kept: [ref(x1)] });
    await settle();
    second.answer("c2", { kept: [ref(x2)] });
    await settle();
    expect(calls.every((c) => c.done)).toBe(true);

    // The second child (as loaded as the first, and used last) busy with a call on y.
    const busy = start(m, "y", y1);
    await settle();
    expect(busy.pid).toBe(second.pid);
    // Revision 3 of x was stored. The fake throws on a forget during a call: it would cross the answer.
    m.forget("x", 3n);
    expect(first.forgets).toEqual([[ref(x1)]]);
    expect(second.forgets).toEqual([]);
    expect([m.residentBytes(), [...m.held()]]).toEqual([100, ["x"]]);

    second.answer("y", { kept: [ref(y1)] });
    await settle();
    expect(busy.done).toBe(true);
    expect(second.forgets).toEqual([[ref(x2)]]);
    expect([m.residentBytes(), [...m.held()]]).toEqual([100, ["y"]]);

    // Without a revision to keep (a deleted model): every one. A model no child holds sends nothing.
    m.forget("y");
    m.forget("z");
    expect(second.forgets).toEqual([[ref(x2)], [ref(y1)]]);
    expect(first.forgets).toHaveLength(1);
    expect([m.residentBytes(), m.held().size]).toEqual([0, 0]);

    // Forgotten, x@2 goes with its bytes again.
    const later = start(m, "x2", x2);
    const child = await running("x2");
    expect(child.current).toMatchObject({ modelId: "x", revision: 2n, resident: false });
    child.answer("x2");
    await settle();
    expect([later.done, x2.reads]).toEqual([true, 2]);
  });

  test("a child that exits takes its residents with it: the next call on its model goes to a new child, with the bytes", async () => {
    const m = open({ maxChildren: 1 });
    const x = model("x", 1n);
    const holder = await serve(m, "c1", x, { kept: [ref(x)] });
    expect(m.held()).toEqual(new Set(["x"]));
    holder.crash(1);
    await settle();
    expect([m.residentBytes(), m.held().size]).toEqual([0, 0]);
    m.forget("x"); // nothing to tell anyone

    const next = start(m, "c2", x);
    const child = await running("c2");
    expect(child).not.toBe(holder);
    expect(child.current).toMatchObject({ modelId: "x", resident: false, instance: new Uint8Array(100).fill(1) });
    child.answer("c2");
    await settle();
    expect([next.done, x.reads, holder.forgets]).toEqual([true, 2, []]);
  });

  test("a child that does not hold what its books say (ResidentMissing) gets the call once more, with the bytes, and stays warm", async () => {
    const m = open({ maxChildren: 1 });
    const x = model("x", 1n);
    const child = await serve(m, "c1", x, { kept: [ref(x)] });
    const call = start(m, "c2", x);
    await settle();
    expect(child.current).toMatchObject({ resident: true });
    child.failResidentMissing();
    await settle();
    expect(child.calls).toHaveLength(3);
    expect(child.current).toMatchObject({ modelId: "x", revision: 1n, resident: false, instance: new Uint8Array(100).fill(1) });
    expect(child.calls[2]!.callId).not.toBe(child.calls[1]!.callId);
    // It keeps it now.
    child.answer("c2", { kept: [ref(x)] });
    await settle();
    expect(call.value).toMatchObject({ warm: true });
    expect([child.signals, m.idle, x.reads, m.residentBytes()]).toEqual([[], 1, 2, 100]);

    // Only once: a child that says so of a call that carried the bytes fails it, and is not reused.
    const twice = start(m, "c3", x);
    await settle();
    child.failResidentMissing();
    await settle();
    expect(child.current).toMatchObject({ resident: false });
    child.failResidentMissing();
    await settle();
    expect(twice.error).toBeInstanceOf(ChildFailure);
    expect(twice.error).toMatchObject({ code: "plugin_error", message: expect.stringContaining("ResidentMissing") });
    expect(child.signals.map((s) => s.signal)).toEqual(["SIGTERM"]);
    expect([m.residentBytes(), m.held().size]).toEqual([0, 0]);
  });

  test("a model whose bytes cannot be read fails its call with why, and the child stays warm", async () => {
    const m = open({ maxChildren: 1 });
    const x = model("x", 1n);
    const child = await serve(m, "c1", model("y", 1n));
    const why = new Error("the store is unreachable");
    const call = start(m, "c2", { ...x, bytes: () => Promise.reject(why) });
    await settle();
    expect([call.error, child.calls.length, child.signals, m.idle]).toEqual([why, 1, [], 1]);
  });

  test("a model larger than its module's resident_mb is sent with every call, with one warning naming plugins[i].resident_mb", async () => {
    const lines: { msg: string; modelId?: string }[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const m = open({ maxChildren: 1, logger });
    const [large, small] = [model("large", 1n, 2 * MiB), model("small", 1n, MiB)];
    for (const tag of ["l1", "l2", "s1"]) await serve(m, tag, tag.startsWith("l") ? large : small);
    expect(lines.map((l) => [l.modelId, l.msg])).toEqual([["large", expect.stringContaining("plugins[0].resident_mb (1 MiB)")]]);
    expect(lines[0]!.msg).toMatch(/sent and deserialized with every call/);

    // resident_mb: 0 turns keeping off: nothing to warn about.
    const off = open({ maxChildren: 1, logger });
    const call = track(
      off.call({ ...A, residentMb: 0 }, { kind: CallKind.PREDICT, target: "fake.Model", model: model("huge", 1n, 8 * MiB), args: [], kwargs: {} }),
    );
    children.helloAll();
    await settle();
    children.alive.find((c) => c.current)!.answer();
    await settle();
    expect([call.done, lines.length]).toEqual([true, 1]);
  });
});
