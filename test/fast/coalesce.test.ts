/** A slow reader's queue: the latest value per key, bounded in bytes, gone with its listeners once it ends. */
import { getEventListeners } from "node:events";
import { describe, expect, test } from "vitest";
import { Coalesced, RESYNC } from "../../server/engine/coalesce.ts";

/** A source of updates, with the listeners subscribed to it. */
function source() {
  const listeners = new Set<(key: string, value: string, bytes?: number) => void>();
  return {
    listeners,
    subscribe: (push: (key: string, value: string, bytes?: number) => void) => {
      listeners.add(push);
      return () => listeners.delete(push);
    },
    push: (key: string, value: string, bytes?: number) => {
      for (const listener of listeners) listener(key, value, bytes);
    },
  };
}

/** Reads `n` values. */
async function take<T>(iterator: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    const next = await iterator.next();
    if (next.done) break;
    out.push(next.value);
  }
  return out;
}

describe("Coalesced", () => {
  test("holds one pending value per key, the latest, in the order of their latest updates; what came before reading is read too", async () => {
    const updates = source();
    const queue = new Coalesced(updates.subscribe, []);
    updates.push("a", "a1");
    updates.push("b", "b1");
    updates.push("a", "a2");
    updates.push("c", "c1");
    expect(queue.pending.count).toBe(3);
    const reader = queue[Symbol.asyncIterator]();
    expect(await take(reader, 3)).toEqual(["b1", "a2", "c1"]);
    // A value that comes while the reader waits wakes it.
    const next = reader.next();
    updates.push("b", "b2");
    expect(await next).toEqual({ done: false, value: "b2" });
    queue.close();
  });

  test("a reader more than maxBytes behind loses what was pending and is told to resync, then gets what comes after", async () => {
    const updates = source();
    const queue = new Coalesced(updates.subscribe, [], 10);
    updates.push("a", "a1", 4);
    updates.push("a", "a2", 4); // replaces a1: 4 bytes pending
    updates.push("b", "b1", 4);
    expect(queue.pending).toEqual({ count: 2, bytes: 8 });
    updates.push("c", "c1", 4);
    expect(queue.pending).toEqual({ count: 0, bytes: 0 });
    updates.push("d", "d1", 4);
    expect(await take(queue[Symbol.asyncIterator](), 2)).toEqual([RESYNC, "d1"]);
    queue.close();
  });

  test("an abort of any of its signals ends the reader, and leaves no listener on the source or the signals", async () => {
    const updates = source();
    const mine = new AbortController();
    const server = new AbortController();
    const queue = new Coalesced(updates.subscribe, [mine.signal, server.signal]);
    expect(updates.listeners.size).toBe(1);
    const read: string[] = [];
    const reading = (async () => {
      for await (const value of queue) if (value !== RESYNC) read.push(value);
    })();
    updates.push("a", "a1");
    await new Promise<void>((resolve) => setImmediate(resolve));
    server.abort();
    await reading;
    expect(read).toEqual(["a1"]);
    expect(updates.listeners.size).toBe(0);
    expect(getEventListeners(mine.signal, "abort")).toHaveLength(0);
    expect(getEventListeners(server.signal, "abort")).toHaveLength(0);
  });

  test("close() ends a waiting reader and unsubscribes", async () => {
    const updates = source();
    const signal = new AbortController().signal;
    const queue = new Coalesced(updates.subscribe, [signal]);
    const next = queue[Symbol.asyncIterator]().next();
    queue.close();
    expect(await next).toEqual({ done: true, value: undefined });
    expect(updates.listeners.size).toBe(0);
    expect(getEventListeners(signal, "abort")).toHaveLength(0);
  });
});
