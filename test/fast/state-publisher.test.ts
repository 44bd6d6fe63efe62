/** The state's revisions and its ring of recent changes (ChangeLog), and the publisher around them. */
import { create } from "@bufbuild/protobuf";
import { afterEach, describe, expect, test, vi } from "vitest";
import { ActionSchema } from "../../gen/plinth/v1/action_pb.ts";
import { ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import { ChangeLog } from "../../server/engine/change-log.ts";
import { type StateEvent, StatePublisher } from "../../server/engine/state-publisher.ts";

afterEach(() => {
  vi.useRealTimers();
});

describe("ChangeLog", () => {
  test("revisions rise by one per change, and a log started later starts above every revision of an earlier one", () => {
    vi.useFakeTimers();
    const before = new ChangeLog(10);
    const start = before.revision;
    const changes = [before.append("action_upserted", "a-1", "m-1"), before.append("model_upserted", "m-1", "m-1")];
    expect(changes.map((c) => c.revision)).toEqual([start + 1n, start + 2n]);
    // A restart a millisecond later: a revision from before it is older than anything new.
    vi.advanceTimersByTime(1);
    expect(new ChangeLog(10).revision).toBeGreaterThan(before.revision);
  });

  test("since() gives the latest change of each key changed after the revision, oldest first", () => {
    const log = new ChangeLog(10);
    const start = log.revision;
    log.append("action_upserted", "a-1", "m-1");
    const model = log.append("model_upserted", "m-1", "m-1");
    const again = log.append("action_upserted", "a-1", "m-1");
    const other = log.append("action_upserted", "a-2", "m-1");
    // A model and an action may share an id's text: they are different keys.
    const sameId = log.append("model_upserted", "a-2", "a-2");
    expect(log.since(start)).toEqual([model, again, other, sameId]);
    expect(log.since(model.revision)).toEqual([again, other, sameId]);
    expect(log.since(log.revision)).toEqual([]);
  });

  test("since() is undefined for a revision beyond the ring, or one this log never gave", () => {
    const log = new ChangeLog(3);
    const start = log.revision;
    const changes = Array.from({ length: 5 }, (_, i) => log.append("action_upserted", `a-${i}`, ""));
    // The ring holds the last three: resuming needs the change after the revision too.
    expect(log.since(start)).toBeUndefined();
    expect(log.since(changes[0]!.revision)).toBeUndefined();
    expect(log.since(changes[1]!.revision)).toEqual(changes.slice(2));
    expect(log.since(log.revision + 1n)).toBeUndefined();
  });

  test("reset() starts from a revision given (a cluster's snapshot): nothing before it is held, later ones come with gaps", () => {
    const log = new ChangeLog(10);
    log.append("action_upserted", "a-1", "");
    log.reset(500n);
    expect(log.revision).toBe(500n);
    expect(log.since(500n)).toEqual([]);
    expect(log.since(499n)).toBeUndefined();
    const change = log.record(507n, "model_deleted", "m-1", "m-1");
    expect(log.revision).toBe(507n);
    expect(log.since(500n)).toEqual([change]);
    expect(log.since(503n)).toEqual([change]);
  });

  test("a log of no changes still resumes from its latest revision", () => {
    const log = new ChangeLog(0);
    const change = log.append("action_upserted", "a-1", "");
    expect(log.since(change.revision)).toEqual([]);
    expect(log.since(change.revision - 1n)).toBeUndefined();
  });
});

describe("StatePublisher", () => {
  test("publishes each change to every listener once, under the next revision, until it unsubscribes", () => {
    const publisher = new StatePublisher(10);
    const start = publisher.revision;
    const first: StateEvent[] = [];
    const second: StateEvent[] = [];
    const stopFirst = publisher.subscribe((e) => first.push(e));
    publisher.subscribe((e) => second.push(e));
    expect(publisher.subscribers).toBe(2);

    const model = create(ModelSchema, { id: "m-1" });
    const event = publisher.publish({ kind: "model_upserted", model });
    expect(event).toEqual({ kind: "model_upserted", model, revision: start + 1n });
    expect(Object.isFrozen(event)).toBe(true);
    stopFirst();
    expect(publisher.subscribers).toBe(1);
    publisher.publish({ kind: "model_deleted", modelId: "m-1" });
    expect(first.map((e) => e.revision)).toEqual([start + 1n]);
    expect(second.map((e) => e.revision)).toEqual([start + 1n, start + 2n]);
  });

  test("records a change under the revision the database gave, and resumes from it", () => {
    const publisher = new StatePublisher(10);
    publisher.reset(100n);
    const action = create(ActionSchema, { id: "a-1", modelId: "m-1" });
    const event = publisher.record(104n, { kind: "action_upserted", action });
    expect(event.revision).toBe(104n);
    expect(publisher.revision).toBe(104n);
    expect(publisher.since(100n)).toEqual([{ revision: 104n, kind: "action_upserted", id: "a-1", modelId: "m-1" }]);
    expect(publisher.publish({ kind: "model_deleted", modelId: "m-1" }).revision).toBe(105n);
  });
});
