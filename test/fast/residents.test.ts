/** A child's resident instances: least recently used out first, within a budget in bytes, and each call's deltas. */
import { describe, expect, test } from "vitest";
import { type ResidentRef, Residents } from "../../sdk/worker/residents.ts";

const ref = (modelId: string, revision = 1): ResidentRef => ({ modelId, revision: BigInt(revision) });
const names = (refs: ResidentRef[]) => refs.map((r) => `${r.modelId}@${r.revision}`);

describe("Residents", () => {
  test("keeps within the budget, evicting the least recently used first; using one makes it the most recent", () => {
    const held = new Residents<string>(300);
    expect(held.keep(ref("a"), 100, "A")).toBe(true);
    expect(held.keep(ref("b"), 100, "B")).toBe(true);
    expect(held.keep(ref("c"), 100, "C")).toBe(true);
    expect(held.bytes).toBe(300);
    expect(held.get(ref("a"))).toBe("A");
    held.deltas();
    // b is now the least recent: it goes to make room for d.
    held.keep(ref("d"), 100, "D");
    expect(names(held.refs())).toEqual(["c@1", "a@1", "d@1"]);
    expect(names(held.deltas().dropped)).toEqual(["b@1"]);
    // A large one evicts as many as it needs, oldest first.
    held.keep(ref("e"), 250, "E");
    expect(names(held.refs())).toEqual(["e@1"]);
    expect(held.bytes).toBe(250);
    expect(held.get(ref("b"))).toBeUndefined();
  });

  test("makes room for an instance before it is made: the least recently used go until it fits, reported as dropped", () => {
    const held = new Residents<string>(300);
    for (const name of ["a", "b", "c"]) held.keep(ref(name), 100, name);
    held.deltas();
    held.makeRoom(150);
    expect([names(held.refs()), held.bytes]).toEqual([["c@1"], 100]);
    expect(names(held.deltas().dropped)).toEqual(["a@1", "b@1"]);
    // Too large to keep at all: nothing is evicted for it.
    held.makeRoom(400);
    expect(names(held.refs())).toEqual(["c@1"]);
  });

  test("never keeps an instance larger than the whole budget, and evicts nothing for it; a budget of 0 keeps nothing", () => {
    const held = new Residents<string>(300);
    held.keep(ref("a"), 100, "A");
    held.deltas();
    expect(held.keep(ref("big"), 301, "BIG")).toBe(false);
    expect(names(held.refs())).toEqual(["a@1"]);
    expect(held.deltas()).toEqual({ dropped: [], kept: [] });
    expect(held.keep(ref("exact"), 300 - 100, "X")).toBe(true);

    const none = new Residents<string>(0);
    expect(none.keep(ref("empty"), 0, "")).toBe(false);
    expect(none.keep(ref("a"), 1, "A")).toBe(false);
    expect(none.refs()).toEqual([]);
    expect(none.deltas()).toEqual({ dropped: [], kept: [] });
  });

  test("revisions of one model are apart: taking one leaves the other", () => {
    const held = new Residents<string>(1000);
    held.keep(ref("m", 1), 10, "r1");
    held.keep(ref("m", 2), 10, "r2");
    expect(held.take(ref("m", 1))).toBe("r1");
    expect(held.get(ref("m", 2))).toBe("r2");
    expect(held.has(ref("m", 1))).toBe(false);
    expect(held.take(ref("m", 1))).toBeUndefined();
  });

  test("deltas: what was held before and is gone, what is held now and was not; a ref kept and dropped within one call is neither", () => {
    const held = new Residents<string>(200);
    held.keep(ref("a"), 100, "A");
    held.keep(ref("b"), 100, "B");
    expect(held.deltas()).toEqual({ dropped: [], kept: [ref("a"), ref("b")] });
    // One call: a predict withInstance takes a@1 out and keeps a@2; then b is used, and x
    // evicts a@2, the least recent now.
    held.take(ref("a"));
    held.keep(ref("a", 2), 100, "A2");
    held.get(ref("b"));
    held.keep(ref("x"), 100, "X");
    expect(names(held.refs())).toEqual(["b@1", "x@1"]);
    expect(held.deltas()).toEqual({ dropped: [ref("a")], kept: [ref("x")] });
    // Nothing since.
    expect(held.deltas()).toEqual({ dropped: [], kept: [] });
  });

  test("replacing what a ref holds (bytes by the instance made from them) is no change to report", () => {
    const held = new Residents<string>(200);
    held.keep(ref("a"), 100, "bytes");
    held.keep(ref("b"), 100, "B");
    held.deltas();
    held.keep(ref("a"), 100, "instance");
    expect(held.deltas()).toEqual({ dropped: [], kept: [] });
    expect(held.get(ref("a"))).toBe("instance");
    expect(names(held.refs())).toEqual(["b@1", "a@1"]);
    expect(held.bytes).toBe(200);
  });

  test("forget drops what the server asked, without a delta (its books already say so), and ignores what it does not hold", () => {
    const held = new Residents<string>(300);
    held.keep(ref("a"), 100, "A");
    held.keep(ref("b"), 100, "B");
    held.deltas();
    held.forget([ref("a"), ref("never")]);
    expect(names(held.refs())).toEqual(["b@1"]);
    expect(held.bytes).toBe(100);
    expect(held.deltas()).toEqual({ dropped: [], kept: [] });
    held.keep(ref("a"), 100, "A again");
    expect(held.deltas()).toEqual({ dropped: [], kept: [ref("a")] });
  });
});
