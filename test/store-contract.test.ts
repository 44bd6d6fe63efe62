/**
 * The Store contract, run against every store as the backend's opening makes it (memory,
 * SQLite, PostgreSQL on the run's embedded server): no server, no children. What one
 * store does here, all do (as Keyv's @keyv/test-suite and Kysely's dialect tests hold
 * every adapter to one suite). What only a durable store can show (a store opened again
 * on the same database) runs on SQLite and PostgreSQL.
 */
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterEach, describe, expect, it } from "vitest";
import { type Action, ActionCall, ActionErrorSchema, ActionSchema, ActionStatus, RetryPolicySchema } from "../gen/plinth/v1/action_pb.ts";
import { ArgSchema } from "../gen/plinth/v1/arg_pb.ts";
import { parseConfig } from "../server/config/load.ts";
import { openBackend } from "../server/store/open.ts";
import { type ModelRecord, STALE_CLAIM_MS, type Store, type StoredPayloads } from "../server/store/store.ts";
import { json } from "./helpers/args.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { tempDir } from "./helpers/temp.ts";

interface Limits {
  keep_revisions?: number;
  max_actions?: number;
  max_action_age_days?: number;
}

/** A database of one kind: each open() is a store on it, as a server's start makes one. */
interface Database {
  open(limits?: Limits): Promise<Store>;
}

interface Kind {
  name: string;
  /** A store opened again on the same database finds what the closed one stored. */
  durable: boolean;
  /** Commits go to a database, in batches: hooks.onCommit hears of each. */
  commits: boolean;
  database(): Promise<Database>;
}

const opened: Store[] = [];
let commits = 0;

function backendOf(kind: Record<string, unknown>, limits: Limits) {
  return parseConfig({ backend: { ...kind, ...limits } }, tempDir()).backend;
}

async function openStore(kind: Record<string, unknown>, limits: Limits = {}): Promise<Store> {
  const { store } = await openBackend(backendOf(kind, limits), { onCommit: () => commits++, processAlive: () => true });
  opened.push(store);
  return store;
}

const kinds: Kind[] = [
  { name: "memory", durable: false, commits: false, database: async () => ({ open: (limits) => openStore({ kind: "memory" }, limits) }) },
  {
    name: "sqlite",
    durable: true,
    commits: true,
    database: async () => {
      const path = join(tempDir(), "plinth.db");
      return { open: (limits) => openStore({ kind: "sqlite", path }, limits) };
    },
  },
  {
    name: "postgres",
    durable: true,
    commits: true,
    database: async () => {
      const url = await newDatabase();
      return { open: (limits) => openStore({ kind: "postgres", url, pool_size: 4 }, limits) };
    },
  },
];

afterEach(async () => {
  for (const store of opened.splice(0).reverse()) await store.close();
  commits = 0;
});

const T0 = Date.parse("2030-01-01T00:00:00Z");
const at = (seconds: number) => new Date(T0 + seconds * 1000);
const bytes = (text: string) => new TextEncoder().encode(text);
const arg = (value: number | string) => create(ArgSchema, json(value));
const turn = () => new Promise((resolve) => setImmediate(resolve));

function model(id: string, revision: number, fields: Partial<ModelRecord> = {}): ModelRecord {
  const instance = fields.instance ?? bytes(`${id}@${revision}`);
  return {
    id,
    modelType: "test.Model",
    revision: BigInt(revision),
    oldestRevision: 1n,
    createTime: at(0),
    updateTime: at(revision),
    instanceSize: instance.byteLength,
    actionId: "",
    ...fields,
    instance,
  };
}

/** An action created at `created` seconds after T0 (ids sort as they were created), ended at `ended` when given. */
function action(id: string, fields: { status?: ActionStatus; modelId?: string; created?: number; ended?: number; createdBy?: string } = {}) {
  const { status = ActionStatus.QUEUED, modelId = "", created = 0, ended, createdBy = "" } = fields;
  return create(ActionSchema, {
    id,
    modelId,
    modelType: "test.Model",
    status,
    createdBy,
    createTime: timestampFromDate(at(created)),
    updateTime: timestampFromDate(at(ended ?? created)),
    ...(ended === undefined ? {} : { endTime: timestampFromDate(at(ended)) }),
  });
}

const ids = (actions: { action: Action }[]) => actions.map((a) => a.action.id);

describe.each(kinds)("the $name store", (kind) => {
  let db: Database;
  let store: Store;
  const open = async (limits?: Limits) => {
    db = await kind.database();
    store = await db.open(limits);
    return store;
  };

  describe("models", () => {
    it("stores a revision and reads it back with its instance; a model never stored is not found", async () => {
      await open();
      const { instance: _, ...meta } = model("m1", 1, { actionId: "act-1" });
      expect(await store.putModel(model("m1", 1, { actionId: "act-1" }))).toEqual(meta);
      const read = await store.getModel("m1");
      expect(read).toEqual(model("m1", 1, { actionId: "act-1" }));
      expect(await store.getModel("m1", 1n)).toEqual(read);
      expect(await store.getModel("m2")).toBeUndefined();
      expect(await store.getModel("m1", 2n)).toBeUndefined();
    });

    it("keeps backend.keep_revisions revisions, the latest included: older ones are gone, oldestRevision says which is kept", async () => {
      await open({ keep_revisions: 2 });
      for (let r = 1; r <= 4; r++) await store.putModel(model("m1", r, { actionId: `act-${r}` }));
      const latest = await store.getModel("m1");
      expect(latest).toMatchObject({ revision: 4n, oldestRevision: 3n, actionId: "act-4", instance: bytes("m1@4") });
      expect(await store.getModel("m1", 1n)).toBeUndefined();
      expect(await store.getModel("m1", 2n)).toBeUndefined();
      // An older revision: what it had (instance, time, action), the model's the rest.
      expect(await store.getModel("m1", 3n)).toEqual({
        ...latest,
        revision: 3n,
        updateTime: at(3),
        actionId: "act-3",
        instance: bytes("m1@3"),
        instanceSize: bytes("m1@3").byteLength,
      });
    });

    it("deletes a model with its revisions; deleting one that is not there says so", async () => {
      await open();
      await store.putModel(model("m1", 1));
      await store.putModel(model("m1", 2));
      expect(await store.deleteModel("m1")).toBe(true);
      expect(await store.getModel("m1")).toBeUndefined();
      expect(await store.getModel("m1", 1n)).toBeUndefined();
      expect(await store.allModels()).toEqual([]);
      expect(await store.deleteModel("m1")).toBe(false);
    });

    it("lists models in id order without their instances, a page after an id, of one model type", async () => {
      await open();
      for (const id of ["m3", "m1", "m4", "m2"]) await store.putModel(model(id, 1, { modelType: id === "m2" ? "other.Model" : "test.Model" }));
      await store.putModel(model("m1", 2));
      const all = await store.allModels();
      expect(all.map((m) => [m.id, m.revision])).toEqual([
        ["m1", 2n],
        ["m2", 1n],
        ["m3", 1n],
        ["m4", 1n],
      ]);
      expect(all.every((m) => !("instance" in m))).toBe(true);
      expect((await store.listModels({ limit: 2 })).map((m) => m.id)).toEqual(["m1", "m2"]);
      expect((await store.listModels({ afterId: "m2", limit: 10 })).map((m) => m.id)).toEqual(["m3", "m4"]);
      expect((await store.listModels({ modelType: "test.Model", limit: 10 })).map((m) => m.id)).toEqual(["m1", "m3", "m4"]);
      expect((await store.listModels({ modelType: "other.Model", afterId: "m2", limit: 10 })).map((m) => m.id)).toEqual([]);
    });
  });

  describe("actions", () => {
    it("stores an action as given and reads it back; its payloads only when asked for", async () => {
      await open();
      const a = action("a1", { modelId: "m1", createdBy: "alice" });
      await store.putAction(a, { args: { args: [arg(1)], kwargs: { x: arg("y") } } });
      expect(await store.getAction("a1")).toEqual({ action: a });
      expect(await store.getAction("a1", true)).toEqual({ action: a, payloads: { args: { args: [arg(1)], kwargs: { x: arg("y") } } } });
      expect(await store.getAction("a2")).toBeUndefined();
    });

    it("keeps the payloads given earlier unless a later change replaces them", async () => {
      await open();
      await store.putAction(action("a1"), { args: { args: [arg(1)], kwargs: {} }, prediction: arg("first") });
      await store.putAction(action("a1", { status: ActionStatus.EXECUTING }));
      await store.putAction(action("a1", { status: ActionStatus.SUCCEEDED, ended: 1 }), { prediction: arg("second") });
      const stored = await store.getAction("a1", true);
      expect(stored?.action.status).toBe(ActionStatus.SUCCEEDED);
      expect(stored?.payloads).toEqual({ args: { args: [arg(1)], kwargs: {} }, prediction: arg("second") });
    });

    it("lists actions newest first, a page before an id, by model, status, creation time and creator, with payloads when asked", async () => {
      await open();
      const all = [
        action("a1", { modelId: "m1", created: 1, createdBy: "alice" }),
        action("a2", { modelId: "m2", created: 2, status: ActionStatus.EXECUTING }),
        action("a3", { modelId: "m1", created: 3, status: ActionStatus.SUCCEEDED, ended: 4, createdBy: "alice" }),
        action("a4", { modelId: "m1", created: 5, status: ActionStatus.FAILED, ended: 6 }),
      ];
      for (const a of all) await store.putAction(a, { prediction: arg(a.id) });
      expect(ids(await store.listActions({ limit: 10 }))).toEqual(["a4", "a3", "a2", "a1"]);
      expect(ids(await store.listActions({ limit: 2 }))).toEqual(["a4", "a3"]);
      expect(ids(await store.listActions({ beforeId: "a3", limit: 10 }))).toEqual(["a2", "a1"]);
      expect(ids(await store.listActions({ modelId: "m1", limit: 10 }))).toEqual(["a4", "a3", "a1"]);
      expect(ids(await store.listActions({ statuses: [ActionStatus.SUCCEEDED, ActionStatus.QUEUED], limit: 10 }))).toEqual(["a3", "a1"]);
      expect(ids(await store.listActions({ createdAfter: at(2), createdBefore: at(5), limit: 10 }))).toEqual(["a3", "a2"]);
      expect(ids(await store.listActions({ createdBy: "alice", limit: 10 }))).toEqual(["a3", "a1"]);
      expect(ids(await store.listActions({ modelId: "m1", createdBy: "alice", beforeId: "a3", limit: 10 }))).toEqual(["a1"]);
      expect(await store.listActions({ modelId: "m2", limit: 10 })).toEqual([{ action: all[1] }]);
      expect(await store.listActions({ modelId: "m2", limit: 10 }, true)).toEqual([{ action: all[1], payloads: { prediction: arg("a2") } }]);
    });

    it("lists actions by call, model type, server and error code", async () => {
      await open();
      const all = [
        create(ActionSchema, { ...action("a1", { created: 1 }), call: ActionCall.CREATE_INSTANCE, modelType: "iris.DecisionTree", server: "s1" }),
        create(ActionSchema, {
          ...action("a2", { created: 2, status: ActionStatus.FAILED, ended: 3 }),
          call: ActionCall.FIT,
          modelType: "iris.DecisionTree",
          server: "s2",
          error: create(ActionErrorSchema, { code: "plugin_error", message: "no" }),
        }),
        create(ActionSchema, {
          ...action("a3", { created: 4, status: ActionStatus.FAILED, ended: 5 }),
          call: ActionCall.FIT,
          modelType: "mnist.MLP",
          server: "s1",
          error: create(ActionErrorSchema, { code: "interrupted", message: "gone" }),
        }),
        create(ActionSchema, {
          ...action("a4", { created: 6, status: ActionStatus.SUCCEEDED, ended: 7 }),
          call: ActionCall.PREDICT,
          modelType: "mnist.MLP",
        }),
      ];
      for (const a of all) await store.putAction(a);
      expect(ids(await store.listActions({ calls: [ActionCall.FIT], limit: 10 }))).toEqual(["a3", "a2"]);
      expect(ids(await store.listActions({ calls: [ActionCall.CREATE_INSTANCE, ActionCall.PREDICT], limit: 10 }))).toEqual(["a4", "a1"]);
      expect(ids(await store.listActions({ modelType: "iris.DecisionTree", limit: 10 }))).toEqual(["a2", "a1"]);
      expect(ids(await store.listActions({ server: "s1", limit: 10 }))).toEqual(["a3", "a1"]);
      expect(ids(await store.listActions({ errorCode: "plugin_error", limit: 10 }))).toEqual(["a2"]);
      expect(ids(await store.listActions({ modelType: "mnist.MLP", statuses: [ActionStatus.FAILED], calls: [ActionCall.FIT], limit: 10 }))).toEqual([
        "a3",
      ]);
      expect(ids(await store.listActions({ modelType: "mnist", limit: 10 }))).toEqual([]);
    });

    it("lists the actions stored as not ended: those a server that died was running", async () => {
      await open();
      await store.putAction(action("a1", { status: ActionStatus.SUCCEEDED, ended: 1 }));
      await store.putAction(action("a2", { status: ActionStatus.EXECUTING }));
      await store.putAction(action("a3", { status: ActionStatus.CANCELLED, ended: 1 }));
      await store.putAction(action("a4"));
      await store.putAction(action("a5", { status: ActionStatus.FAILED, ended: 1 }));
      await store.putAction(action("a6", { status: ActionStatus.STORING }));
      expect((await store.unfinishedActions()).map((a) => a.id).sort()).toEqual(["a2", "a4", "a6"]);
    });

    it("keeps an unfinished action's request and last checkpoint for its next attempt, and lets them go once it ends", async () => {
      await open();
      const retried = (fields: Parameters<typeof action>[1]) =>
        create(ActionSchema, { ...action("a1", fields), retry: create(RetryPolicySchema, { maxAttempts: 3 }) });
      const pending = async () => {
        const { request, checkpoint } = await store.pendingRequest("a1");
        return { request: request && new TextDecoder().decode(request), checkpoint: checkpoint && new TextDecoder().decode(checkpoint) };
      };
      await store.putAction(retried({}), { request: bytes("the request") });
      expect(await pending()).toEqual({ request: "the request", checkpoint: undefined });
      await store.putAction(retried({ status: ActionStatus.EXECUTING }), { checkpoint: bytes("epoch 1") });
      await store.putAction(retried({ status: ActionStatus.EXECUTING }), { checkpoint: bytes("epoch 2") });
      await store.putAction(retried({ status: ActionStatus.QUEUED }));
      expect(await pending()).toEqual({ request: "the request", checkpoint: "epoch 2" });
      await store.putAction(retried({ status: ActionStatus.SUCCEEDED, ended: 1 }));
      expect(await pending()).toEqual({ request: undefined, checkpoint: undefined });
      expect((await store.getAction("a1"))?.action.status).toBe(ActionStatus.SUCCEEDED);
    });

    it("settles an end whose commit lost its answer: stored unless the store holds the action ended already", async () => {
      await open();
      await store.putAction(action("a1", { status: ActionStatus.STORING }));
      const failed = action("a1", { status: ActionStatus.FAILED, ended: 2 });
      expect(await store.settleEnd(failed)).toEqual(failed);
      expect((await store.getAction("a1"))?.action).toEqual(failed);
      const succeeded = action("a2", { status: ActionStatus.SUCCEEDED, ended: 1 });
      await store.putAction(succeeded);
      expect(await store.settleEnd(action("a2", { status: ActionStatus.FAILED, ended: 2 }))).toEqual(succeeded);
      expect((await store.getAction("a2"))?.action).toEqual(succeeded);
    });

    it("applies the history's retention: the oldest ended actions beyond backend.max_actions, those ended longer ago than max_action_age_days", async () => {
      await open({ max_actions: 2, max_action_age_days: 1 });
      const day = 24 * 3600;
      await store.putAction(action("a1", { status: ActionStatus.SUCCEEDED, ended: 1 }));
      await store.putAction(action("a2", { status: ActionStatus.EXECUTING }));
      await store.putAction(action("a3", { status: ActionStatus.FAILED, ended: 3 }));
      await store.putAction(action("a4", { status: ActionStatus.SUCCEEDED, ended: day }));
      await store.putAction(action("a5", { status: ActionStatus.CANCELLED, ended: day + 10 }));
      // Four ended, two kept: the oldest two go.
      expect(await store.pruneActions(at(2))).toBe(2);
      expect(ids(await store.listActions({ limit: 10 }))).toEqual(["a5", "a4", "a2"]);
      // A day after a4 ended, it is too old; a5 not yet; a2 has not ended.
      expect(await store.pruneActions(at(day + 5 + day))).toBe(1);
      expect(ids(await store.listActions({ limit: 10 }))).toEqual(["a5", "a2"]);
      expect(await store.pruneActions(at(day + 5 + day))).toBe(0);
    });
  });

  describe("request ids", () => {
    const claim = (actionId: string, fields: { createdBy?: string; requestId?: string; fingerprint?: string } = {}) => ({
      createdBy: "ann",
      requestId: "r-1",
      fingerprint: "f1",
      outcome: "",
      ...fields,
      actionId,
    });

    it("hold one claim per caller and id: the first, until its action is dropped or a claim never stored goes stale", async () => {
      await open({ max_actions: 1 });
      expect(await store.claimRequest(claim("a1"), at(0))).toBeUndefined();
      // Another action with the same id finds the first claim, its arguments' digest included.
      expect(await store.claimRequest(claim("a2", { fingerprint: "f2" }), at(1))).toEqual(claim("a1"));
      // Another caller's id, another id: free.
      expect(await store.claimRequest(claim("b1", { createdBy: "bob" }), at(1))).toBeUndefined();
      expect(await store.claimRequest(claim("a3", { requestId: "r-2" }), at(1))).toBeUndefined();
      // Released by its own action only: the id is free again.
      await store.releaseRequest(claim("a2"));
      expect(await store.claimRequest(claim("a4"), at(2))).toEqual(claim("a1"));
      await store.releaseRequest(claim("a1"));
      expect(await store.claimRequest(claim("a5"), at(2))).toBeUndefined();
      // A claim whose action is stored holds however old; one never stored is taken over once stale.
      await store.putAction(action("a5", { createdBy: "ann" }));
      await store.putAction(action("a3", { status: ActionStatus.SUCCEEDED, ended: 3, createdBy: "ann" }));
      const late = new Date(at(2).getTime() + STALE_CLAIM_MS + 1000);
      expect(await store.claimRequest(claim("a6"), late)).toEqual(claim("a5"));
      expect(await store.claimRequest(claim("x2", { createdBy: "bob" }), late)).toBeUndefined();
      // The history's retention drops a3 (one ended action kept, a9): its id is free.
      expect(await store.claimRequest(claim("a7", { requestId: "r-2" }), at(4))).toEqual(claim("a3", { requestId: "r-2" }));
      await store.putAction(action("a9", { status: ActionStatus.SUCCEEDED, ended: 4 }));
      expect(await store.pruneActions(at(4))).toBe(1);
      expect(await store.claimRequest(claim("a7", { requestId: "r-2" }), at(4))).toBeUndefined();
    });

    it("hold the claim of a call that starts no action once settled with its outcome, until max_action_age_days", async () => {
      await open({ max_action_age_days: 1 });
      const day = 24 * 3600 * 1000;
      expect(await store.claimRequest(claim("r-1"), at(0))).toBeUndefined();
      await store.settleRequest(claim("r-1"), "AddInstance of model m-1");
      const held = { ...claim("r-1"), outcome: "AddInstance of model m-1" };
      // Settled, it holds long past the stale time; the retention's age drops it.
      expect(await store.claimRequest(claim("r-2"), new Date(at(0).getTime() + STALE_CLAIM_MS + 1000))).toEqual(held);
      await store.pruneActions(new Date(at(0).getTime() + day / 2));
      expect(await store.claimRequest(claim("r-2"), new Date(at(0).getTime() + day / 2))).toEqual(held);
      await store.pruneActions(new Date(at(0).getTime() + 2 * day));
      expect(await store.claimRequest(claim("r-3"), new Date(at(0).getTime() + 2 * day))).toBeUndefined();
    });
  });

  describe("a revision and its action's end", () => {
    it("are one commit: the end is made from the revision's metadata as stored, once", async () => {
      await open({ keep_revisions: 1 });
      await store.putModel(model("m1", 1));
      await store.putAction(action("a1", { modelId: "m1", status: ActionStatus.STORING }), { args: { args: [arg(1)], kwargs: {} } });
      const seen: bigint[] = [];
      const meta = await store.putModel(model("m1", 2, { actionId: "a1" }), (stored) => {
        seen.push(stored.oldestRevision);
        return { action: action("a1", { modelId: "m1", status: ActionStatus.SUCCEEDED, ended: 2 }), payloads: { prediction: arg("done") } };
      });
      expect(seen).toEqual([2n]);
      expect(meta).toMatchObject({ revision: 2n, oldestRevision: 2n, actionId: "a1" });
      expect(await store.getModel("m1")).toMatchObject({ revision: 2n, actionId: "a1" });
      const ended = await store.getAction("a1", true);
      expect(ended?.action.status).toBe(ActionStatus.SUCCEEDED);
      expect(ended?.payloads).toEqual({ args: { args: [arg(1)], kwargs: {} }, prediction: arg("done") });
    });

    it("come after the action's earlier changes, even those of the same turn", async () => {
      await open();
      const stored = store.putAction(action("a1", { status: ActionStatus.STORING }));
      const meta = store.putModel(model("m1", 1, { actionId: "a1" }), () => ({
        action: action("a1", { modelId: "m1", status: ActionStatus.SUCCEEDED, ended: 1 }),
      }));
      await Promise.all([stored, meta]);
      expect((await store.getAction("a1"))?.action.status).toBe(ActionStatus.SUCCEEDED);
      expect(await store.unfinishedActions()).toEqual([]);
    });

    it("an action left STORING with its revision stored (an older Plinth committed them apart) is found by the revision it made", async () => {
      await open();
      await store.putModel(model("m1", 1, { actionId: "create" }));
      await store.putModel(model("m1", 2, { actionId: "fit" }));
      await store.putModel(model("m2", 1, { actionId: "other" }));
      const fit = action("fit", { modelId: "m1", status: ActionStatus.STORING });
      expect(await store.revisionMadeBy(fit)).toMatchObject({ id: "m1", revision: 2n, actionId: "fit" });
      // A new model's id is found by the action that made it.
      expect(await store.revisionMadeBy(action("create", { status: ActionStatus.STORING }))).toBeUndefined();
      await store.putModel(model("m3", 1, { actionId: "new" }));
      expect(await store.revisionMadeBy(action("new", { status: ActionStatus.STORING }))).toMatchObject({ id: "m3", revision: 1n, actionId: "new" });
      // Only an action left STORING can have made one.
      expect(await store.revisionMadeBy(action("fit", { modelId: "m1", status: ActionStatus.EXECUTING }))).toBeUndefined();
      expect(await store.revisionMadeBy(action("gone", { modelId: "m1", status: ActionStatus.STORING }))).toBeUndefined();
    });
  });

  describe("the group commit", () => {
    it("commits the changes of one turn together, each action's latest change with the payloads of all, and tells each caller", async () => {
      await open();
      await turn();
      commits = 0;
      const changes: Promise<void>[] = [];
      for (let i = 1; i <= 20; i++) changes.push(store.putAction(action(`a${String(i).padStart(2, "0")}`, { modelId: "m1" })));
      changes.push(store.putAction(action("a01", { modelId: "m1", status: ActionStatus.EXECUTING }), { args: { args: [arg(1)], kwargs: {} } }));
      changes.push(store.putAction(action("a01", { modelId: "m1", status: ActionStatus.SUCCEEDED, ended: 1 }), { prediction: arg(2) }));
      await Promise.all(changes);
      if (kind.commits) expect(commits).toBe(1);
      const listed = await store.listActions({ limit: 100 }, true);
      expect(listed).toHaveLength(20);
      expect(listed.at(-1)).toEqual({
        action: action("a01", { modelId: "m1", status: ActionStatus.SUCCEEDED, ended: 1 }),
        payloads: { args: { args: [arg(1)], kwargs: {} }, prediction: arg(2) },
      });
    });

    it("lets a read see every change made before it, committed or still in this turn's batch", async () => {
      await open();
      void store.putAction(action("a1"));
      expect(ids(await store.listActions({ limit: 10 }))).toEqual(["a1"]);
      void store.putAction(action("a1", { status: ActionStatus.EXECUTING }));
      expect((await store.getAction("a1"))?.action.status).toBe(ActionStatus.EXECUTING);
    });
  });

  describe.runIf(kind.durable)("opened again on the same database", () => {
    it("holds what the closed store stored", async () => {
      await open({ keep_revisions: 2 });
      await store.putModel(model("m1", 1));
      await store.putModel(model("m1", 2));
      await store.putAction(action("a1", { status: ActionStatus.SUCCEEDED, ended: 1 }), { prediction: arg("kept") });
      await store.close();
      const again = await db.open({ keep_revisions: 2 });
      expect(again.id).toBe(store.id);
      expect(await again.getModel("m1", 1n)).toEqual(model("m1", 1, { oldestRevision: 1n }));
      expect(await again.getModel("m1")).toEqual(model("m1", 2));
      expect(await again.getAction("a1", true)).toEqual({
        action: action("a1", { status: ActionStatus.SUCCEEDED, ended: 1 }),
        payloads: { prediction: arg("kept") } satisfies StoredPayloads,
      });
    });

    it("lists the children the closed store tracked and did not untrack, until they are cleared", async () => {
      await open();
      await store.trackChild({ pid: 101, startTicks: "5" });
      await store.trackChild({ pid: 102, startTicks: "6" });
      await store.trackChild({ pid: 103, startTicks: "7" });
      await store.untrackChild(102);
      await store.close();
      const again = await db.open();
      const children = await again.trackedChildren();
      expect(children.sort((a, b) => a.pid - b.pid)).toEqual([
        { pid: 101, startTicks: "5" },
        { pid: 103, startTicks: "7" },
      ]);
      await again.clearTrackedChildren();
      expect(await again.trackedChildren()).toEqual([]);
    });
  });
});
