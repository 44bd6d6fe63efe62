/** The live table's rules: admission (max_queue, per caller, in-flight bytes), queue positions, retention. */
import { create } from "@bufbuild/protobuf";
import { describe, expect, test, vi } from "vitest";
import { type Action, ActionSchema, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { CallArgs } from "../../server/engine/args.ts";
import { LiveTable, type LiveTableOptions } from "../../server/engine/live-table.ts";
import type { Payload } from "../../server/engine/payloads.ts";
import { type StateEvent, StatePublisher } from "../../server/engine/state-publisher.ts";

const MiB = 2 ** 20;

const options: LiveTableOptions = {
  retainActions: 1000,
  retainActionsMs: 3600_000,
  retainBytes: 64 * MiB,
  maxQueue: 1000,
  maxQueuePerCaller: 1000,
  maxInflightBytes: 512 * MiB,
};

const bytesArg = (n: number): Payload => ({ kind: "bytes", data: new Uint8Array(n), bytes: n });
const argsOf = (n: number): CallArgs => ({ args: n ? [bytesArg(n)] : [], kwargs: {} });

let ids = 0;

/** Admits and adds a new QUEUED action, as the engine does. */
function add(table: LiveTable, fields: { createdBy?: string; bytes?: number } = {}): Action {
  const bytes = fields.bytes ?? 0;
  table.admit(bytes, fields.createdBy ?? "");
  const view = create(ActionSchema, { id: `a-${String(++ids).padStart(12, "0")}`, status: ActionStatus.QUEUED, createdBy: fields.createdBy ?? "" });
  return table.addAction(view, argsOf(bytes), "json");
}

describe("LiveTable admission", () => {
  test("refuses a new action once max_queue actions wait (queued or accessing data), naming engine.max_queue; one that starts frees its place", () => {
    const table = new LiveTable({ ...options, maxQueue: 2 });
    const first = add(table);
    const second = add(table);
    table.update(second.id, { status: ActionStatus.ACCESSING_DATA });
    expect(table.waiting).toBe(2);
    expect(() => add(table)).toThrow(
      expect.objectContaining({
        kind: "queue_full",
        message: expect.stringContaining("2 actions are waiting (queued or accessing data) and engine.max_queue is 2"),
      }),
    );
    table.update(first.id, { status: ActionStatus.EXECUTING });
    expect(table.waiting).toBe(1);
    expect(() => add(table)).not.toThrow();
  });

  test("refuses a caller with queued_per_caller actions waiting, naming the caller and server.limits.queued_per_caller; other callers still get in", () => {
    const table = new LiveTable({ ...options, maxQueuePerCaller: 2 });
    add(table, { createdBy: "alice" });
    const last = add(table, { createdBy: "alice" });
    expect(() => add(table, { createdBy: "alice" })).toThrow(
      expect.objectContaining({
        kind: "queue_full",
        message: expect.stringContaining("caller alice has 2 actions waiting and server.limits.queued_per_caller is 2"),
      }),
    );
    expect(() => add(table, { createdBy: "bob" })).not.toThrow();
    table.finish(last.id, { status: ActionStatus.CANCELLED });
    expect(() => add(table, { createdBy: "alice" })).not.toThrow();
  });

  test("refuses an action whose arguments would take the unended actions past max_inflight_mb, naming it; an end gives the bytes back", () => {
    const table = new LiveTable({ ...options, maxInflightBytes: 3 * MiB });
    const big = add(table, { bytes: 2 * MiB });
    expect(table.bytes.inflight).toBe(2 * MiB);
    expect(() => add(table, { bytes: 1.5 * MiB })).toThrow(
      expect.objectContaining({
        kind: "queue_full",
        message: expect.stringContaining("hold 2.0 MiB of arguments; this one adds 1.5 MiB and engine.max_inflight_mb is 3.0; retry later"),
      }),
    );
    expect(() => add(table, { bytes: 1 * MiB })).not.toThrow();
    table.finish(big.id, { status: ActionStatus.SUCCEEDED });
    expect(table.bytes.inflight).toBe(1 * MiB);
    expect(() => add(table, { bytes: 1.5 * MiB })).not.toThrow();
  });
});

describe("LiveTable queue positions", () => {
  test("queued actions count from 1 in the order they became queued; one re-queued after its data access goes to the back", () => {
    const table = new LiveTable(options);
    const [a, b, c] = [add(table), add(table), add(table)];
    expect([a, b, c].map((x) => x.queuePosition)).toEqual([1, 2, 3]);

    table.update(a.id, { status: ActionStatus.ACCESSING_DATA });
    expect([a, b, c].map((x) => table.queuePosition(x.id))).toEqual([0, 1, 2]);
    const requeued = table.update(a.id, { status: ActionStatus.QUEUED });
    expect(requeued.queuePosition).toBe(3);
    expect([...table.queued()]).toEqual([b.id, c.id, a.id]);

    const ended = table.finish(b.id, { status: ActionStatus.CANCELLED });
    expect(ended.view.queuePosition).toBe(0);
    expect([c, a].map((x) => table.queuePosition(x.id))).toEqual([1, 2]);
  });
});

describe("LiveTable retention", () => {
  test("keeps at most retain_actions ended actions, dropping the oldest ended first and never one still running", () => {
    const table = new LiveTable({ ...options, retainActions: 2 });
    const running = add(table);
    const ended = [add(table), add(table), add(table)];
    for (const action of ended) table.finish(action.id, { status: ActionStatus.SUCCEEDED });
    expect(table.action(ended[0]!.id)).toBeUndefined();
    expect(table.action(ended[1]!.id)?.view.status).toBe(ActionStatus.SUCCEEDED);
    expect(table.action(ended[2]!.id)).toBeDefined();
    expect(table.action(running.id)?.view.status).toBe(ActionStatus.QUEUED);
  });

  test("drops ended actions older than retain_actions_seconds", () => {
    vi.useFakeTimers();
    try {
      const table = new LiveTable({ ...options, retainActionsMs: 1000 });
      const [old, recent] = [add(table), add(table)];
      table.finish(old.id, { status: ActionStatus.SUCCEEDED });
      vi.advanceTimersByTime(600);
      table.finish(recent.id, { status: ActionStatus.FAILED });
      vi.advanceTimersByTime(400);
      table.retire();
      expect(table.action(old.id)).toBeDefined();
      vi.advanceTimersByTime(1);
      table.retire();
      expect(table.action(old.id)).toBeUndefined();
      expect(table.action(recent.id)).toBeDefined();
    } finally {
      vi.useRealTimers();
    }
  });

  test("drops the oldest ended actions once the ended ones hold more than retain_actions_mb", () => {
    const table = new LiveTable({ ...options, retainBytes: 3 * MiB });
    const [first, second, third] = [add(table, { bytes: MiB }), add(table, { bytes: MiB }), add(table, { bytes: MiB })];
    table.finish(first.id, { status: ActionStatus.SUCCEEDED });
    table.finish(second.id, { status: ActionStatus.SUCCEEDED });
    expect(table.action(first.id)).toBeDefined();
    // Its result too: the third ended action holds 2 MiB.
    table.finish(third.id, { status: ActionStatus.SUCCEEDED }, bytesArg(MiB));
    expect(table.action(first.id)).toBeUndefined();
    expect(table.action(second.id)).toBeUndefined();
    expect(table.action(third.id)).toBeDefined();
    expect(table.bytes.ended).toBeLessThanOrEqual(3 * MiB);
  });
});

describe("LiveTable publishing", () => {
  test("given a publisher, each change is published once, under the next revision, with the view the table holds", () => {
    const publisher = new StatePublisher(100);
    const events: StateEvent[] = [];
    publisher.subscribe((event) => events.push(event));
    const table = new LiveTable(options, publisher);
    const start = publisher.revision;
    const action = add(table);
    const running = table.update(action.id, { status: ActionStatus.EXECUTING });
    const ended = table.finish(action.id, { status: ActionStatus.SUCCEEDED });
    expect(events.map((e) => e.revision)).toEqual([start + 1n, start + 2n, start + 3n]);
    expect(events.map((e) => (e.kind === "action_upserted" ? e.action : undefined))).toEqual([action, running, ended.view]);
    expect(Object.isFrozen(ended.view)).toBe(true);
  });
});
