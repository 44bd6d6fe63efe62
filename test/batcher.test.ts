/** The group commit shared by the SQLite and PostgreSQL stores (server/store/batcher.ts), on its own. */
import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Action, ActionSchema, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../gen/plinth/v1/arg_pb.ts";
import { type ActionWrite, Batcher } from "../server/store/batcher.ts";
import { json } from "./helpers/args.ts";

const action = (id: string, status = ActionStatus.QUEUED): Action => create(ActionSchema, { id, status });
const arg = (value: number | string) => create(ArgSchema, json(value));
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** What a commit received: the action ids and statuses of each batch. */
function recorder() {
  const batches: string[][] = [];
  const record = (writes: ActionWrite[]) => batches.push(writes.map((w) => `${w.action.id}:${w.action.status}`));
  return { batches, record };
}

describe("the group commit", () => {
  it("commits the changes of one turn together, one write per action in the order of their latest change, and tells every caller", async () => {
    const { batches, record } = recorder();
    const batcher = new Batcher({ commit: (writes) => void record(writes) });
    const settled = [batcher.add(action("a")), batcher.add(action("b")), batcher.add(action("a", ActionStatus.EXECUTING)), batcher.add(action("c"))];
    expect(batches).toEqual([]);
    await Promise.all(settled);
    expect(batches).toEqual([["b:1", "a:3", "c:1"]]);
    await batcher.add(action("d"));
    expect(batches).toEqual([["b:1", "a:3", "c:1"], ["d:1"]]);
  });

  it("keeps the payloads of both changes of one action, the later replacing the earlier where both have one, and the claim of either", async () => {
    const seen: ActionWrite[] = [];
    const batcher = new Batcher({ commit: (writes) => void seen.push(...writes) });
    void batcher.add(action("a"), { args: { args: [arg(1)], kwargs: {} }, prediction: arg("old") }, true);
    await batcher.add(action("a", ActionStatus.SUCCEEDED), { prediction: arg("new") });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.payloads).toEqual({ args: { args: [arg(1)], kwargs: {} }, prediction: arg("new") });
    expect(seen[0]!.claim).toBe(true);
  });

  it("has committed a synchronous store's changes by the time flush returns", () => {
    const { batches, record } = recorder();
    const batcher = new Batcher({ commit: (writes) => void record(writes) });
    void batcher.add(action("a"));
    void batcher.flush();
    expect(batches).toEqual([["a:1"]]);
  });

  it("runs an asynchronous store's commits one at a time, in order, and a flush waits for the commit under way", async () => {
    const { batches, record } = recorder();
    const gates: (() => void)[] = [];
    const batcher = new Batcher({
      commit: async (writes) => {
        record(writes);
        await new Promise<void>((resolve) => gates.push(resolve));
        return undefined;
      },
    });
    const first = batcher.add(action("a"));
    await turn();
    expect(batches).toEqual([["a:1"]]);
    const second = batcher.add(action("b"));
    let flushed = false;
    const flush = batcher.flush().then(() => (flushed = true));
    await turn();
    // The second batch waits for the first to commit.
    expect(batches).toEqual([["a:1"]]);
    gates.shift()!();
    await first;
    await turn();
    expect(batches).toEqual([["a:1"], ["b:1"]]);
    expect(flushed).toBe(false);
    gates.shift()!();
    await Promise.all([second, flush]);
    expect(flushed).toBe(true);
  });

  it("answers each caller with the commit's answer for its action", async () => {
    const batcher = new Batcher<bigint>({ commit: async (writes) => new Map(writes.map((w, i) => [w.action.id, BigInt(i + 10)])) });
    expect(await Promise.all([batcher.add(action("a")), batcher.add(action("b"))])).toEqual([10n, 11n]);
  });

  it("tries a failed batch write by write: only the write that fails alone fails", async () => {
    const { batches, record } = recorder();
    const batcher = new Batcher({
      commit: (writes) => {
        record(writes);
        if (writes.some((w) => w.action.id === "bad")) throw new Error("bad write");
        return undefined;
      },
    });
    const results = await Promise.allSettled([batcher.add(action("a")), batcher.add(action("bad")), batcher.add(action("c"))]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(batches).toEqual([["a:1", "bad:1", "c:1"], ["a:1"], ["bad:1"], ["c:1"]]);
  });

  it("fails the whole batch at once when the error says trying each would fail too (the database is gone)", async () => {
    const { batches, record } = recorder();
    let onCommit = 0;
    const batcher = new Batcher({
      commit: async (writes) => {
        record(writes);
        throw new Error("unreachable");
      },
      split: () => false,
      onCommit: () => onCommit++,
    });
    const results = await Promise.allSettled([batcher.add(action("a")), batcher.add(action("b"))]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(batches).toEqual([["a:1", "b:1"]]);
    expect(onCommit).toBe(0);
  });

  describe("a change that lingers (a call's start)", () => {
    // Only the linger's timer and clock are fake: the end of a turn stays a real setImmediate.
    const lingering = () => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const LINGER_MS = 50;
    afterEach(() => void vi.useRealTimers());

    it("is written with its action's next change, in one write with the later status, and both callers hear of it", async () => {
      lingering();
      const { batches, record } = recorder();
      const batcher = new Batcher({ commit: (writes) => void record(writes) });
      const start = batcher.add(action("a", ActionStatus.EXECUTING), undefined, false, LINGER_MS);
      await turn();
      expect(batches).toEqual([]);
      await Promise.all([start, batcher.add(action("a", ActionStatus.SUCCEEDED))]);
      expect(batches).toEqual([["a:5"]]);
      vi.advanceTimersByTime(LINGER_MS);
      expect(batches).toEqual([["a:5"]]);
    });

    it("is written on its own after LINGER_MS when nothing follows, while the others' changes go at the end of their turn", async () => {
      lingering();
      const { batches, record } = recorder();
      const batcher = new Batcher({ commit: (writes) => void record(writes) });
      let stored = false;
      const start = batcher.add(action("a", ActionStatus.EXECUTING), undefined, false, LINGER_MS).then(() => (stored = true));
      await batcher.add(action("b"));
      expect(batches).toEqual([["b:1"]]);
      vi.advanceTimersByTime(LINGER_MS - 1);
      await turn();
      expect(stored).toBe(false);
      vi.advanceTimersByTime(1);
      await start;
      expect(batches).toEqual([["b:1"], ["a:3"]]);
    });

    it("is written when the first of its action's pending changes says: a later, shorter linger brings it forward", async () => {
      lingering();
      const { batches, record } = recorder();
      const batcher = new Batcher({ commit: (writes) => void record(writes) });
      void batcher.add(action("a"), undefined, false, 1000);
      void batcher.add(action("b"), undefined, false, 1000);
      vi.advanceTimersByTime(100);
      const started = batcher.add(action("a", ActionStatus.EXECUTING), undefined, false, LINGER_MS);
      await turn();
      expect(batches).toEqual([]);
      vi.advanceTimersByTime(LINGER_MS);
      await started;
      // b lingers on, to its own time.
      expect(batches).toEqual([["a:3"]]);
      vi.advanceTimersByTime(1000 - 100 - LINGER_MS - 1);
      expect(batches).toEqual([["a:3"]]);
      vi.advanceTimersByTime(1);
      expect(batches).toEqual([["a:3"], ["b:1"]]);
    });

    it("is written by a flush, so that a read sees it", () => {
      lingering();
      const { batches, record } = recorder();
      const batcher = new Batcher({ commit: (writes) => void record(writes) });
      void batcher.add(action("a", ActionStatus.EXECUTING), undefined, false, LINGER_MS);
      void batcher.flush();
      expect(batches).toEqual([["a:3"]]);
    });

    it("does not hold back a change of its action someone waits for at the end of this turn", async () => {
      lingering();
      const { batches, record } = recorder();
      const batcher = new Batcher({ commit: (writes) => void record(writes) });
      const queued = batcher.add(action("a"));
      void batcher.add(action("a", ActionStatus.EXECUTING), undefined, false, LINGER_MS);
      await queued;
      expect(batches).toEqual([["a:3"]]);
    });
  });
});
