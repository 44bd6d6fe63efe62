/**
 * PostgreSQL's part in a cluster, in memory, for the fast tests: one FakeDatabase that
 * several servers join, each with its Cluster and its Store over the same data. It keeps
 * the rules the database keeps (server/cluster/postgres-cluster.ts, server/store/postgres.ts and the
 * plinth_write_actions / plinth_claim functions):
 *
 * - one revision sequence: every write takes the next revisions, and the feed
 *   (changes) gives each row's latest change after a revision, in revision order;
 * - the queue: a new action's request waits in arrival order (seq), shared when it is a
 *   predict whose model type every server declaring it runs shared (announced shares).
 *   A server takes a call when it asks (at once as it is stored, when nothing on its model
 *   waits, or by claim) and its model lets it in: exclusive, when it is the model's oldest
 *   and nothing on the model is claimed; shared (its type shared by that server too), when
 *   no exclusive call is before it, up to that server's share of the model — a server that runs the type one call at a
 *   time takes it exclusive. An update (UpdateInstance) takes its place in the queue too:
 *   no call queued after it is taken before it leaves, and it is stored once nothing
 *   before it is left and no call on its model is claimed. Among the calls a claim may take: the highest priority
 *   (a call on a model at the best of the unfinished calls' on that model)
 *   first; within it, those on models in `held` first, unless an older call waited past `affinityMs`; then callers
 *   in turns (a caller's k-th unfinished call at that priority, claimed ones counted, in turn k; within a turn, the
 *   caller served least lately first); then the oldest. A call stored
 *   after another new call of the same write on its model is taken only shared, behind
 *   shared ones taken too. An ended action leaves the queue;
 * - an ended action never changes again; a model's next revision is the one after the
 *   latest, else failed_precondition;
 * - notices: "changes" (with the batch's server and revisions) after each write, "work"
 *   while the queue holds unclaimed calls, "cancel" to every server; and each server's
 *   tick (every second, the fake clock's) repeats "changes" and "work".
 *
 * A test can refuse writes, hold them, lose a claim's answer, drop cancel requests and
 * break a server's listening connection.
 */
import { EventEmitter } from "node:events";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { ActionCall, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { Announced, ClaimedAction, ClaimScope, Cluster, ClusterEvents, FeedChange, ServerInfo } from "../../server/cluster/types.ts";
import { afterLoss } from "../../server/engine/retry-policy.ts";
import { PlinthError } from "../../server/errors.ts";
import { interruptedAction } from "../../server/store/interrupted.ts";
import { MemoryStore } from "../../server/store/memory.ts";
import type {
  EndedWith,
  ListActionsQuery,
  ListModelsQuery,
  ModelMeta,
  ModelRecord,
  PendingRequest,
  RequestClaim,
  Store,
  StoredAction,
  StoredPayloads,
  TrackedChild,
} from "../../server/store/store.ts";

const ENDED = new Set([ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED]);
const isEnded = (action: Action) => ENDED.has(action.status);

interface QueueEntry {
  readonly actionId: string;
  readonly seq: number;
  readonly request: Uint8Array;
  readonly modelId: string;
  readonly modelType: string;
  readonly dataAccess: readonly string[];
  /** When it was stored (the clock's ms). */
  readonly enqueued: number;
  /** Runs beside the other shared calls on its model; false once a server took it exclusive. */
  shared: boolean;
  /** The server that claimed it; undefined while it waits. */
  owner: string | undefined;
}

interface ActionWrite {
  action: Action;
  payloads?: StoredPayloads | undefined;
  claim: boolean;
}

/** What a server asked of the database, for tests to see. */
export type Request =
  | { server: string; op: "requestCancel"; actionId: string; by: string }
  | { server: string; op: "release"; actionIds: string[]; why: string }
  | { server: string; op: "claim"; n: number; claimed: string[] }
  | { server: string; op: "takeQueued"; actionId: string; taken: boolean };

type Refusable = "write" | "putModel";

interface Refusal {
  op: Refusable;
  when: (subject: Action | ModelRecord) => boolean;
  times: number;
  error: Error;
}

const TICK_MS = 1000;

/** Sets a promise for others to wait on; the returned function resolves it and unsets it. */
function gate(set: (held: Promise<void> | undefined) => void): () => void {
  let release!: () => void;
  set(new Promise<void>((resolve) => (release = resolve)));
  return () => {
    set(undefined);
    release();
  };
}

export class FakeDatabase {
  /** Models, actions and payloads, as the database's tables hold them. */
  readonly #data = new MemoryStore({ keepRevisions: 5, maxActions: 100_000, maxActionAgeMs: 30 * 24 * 3600_000 });
  /** The actions as stored, to read at once (a write checks whether one has ended). */
  readonly #actions = new Map<string, Action>();
  #revision = 1000n;
  #seq = 0;
  /** When each caller was last served a claim, per priority (claim_turns). */
  readonly #served = new Map<string, number>();
  #turns = 0;
  /** Each row's latest change: actions, models and model tombstones (what `changes` reads). */
  readonly #rows = new Map<string, FeedChange>();
  readonly queue = new Map<string, QueueEntry>();
  /** Updates waiting for their turn on a model, by id. */
  readonly updates = new Map<string, { seq: number; modelId: string; owner: string }>();
  /** Every change committed, in revision order (the rows keep only each one's latest). */
  readonly history: FeedChange[] = [];
  readonly #servers = new Map<string, FakeCluster>();
  readonly requests: Request[] = [];
  readonly #refusals: Refusal[] = [];
  #held: Promise<void> | undefined;
  /** One operation at a time, as the database's write lock: nothing interleaves with a commit. */
  #lock: Promise<unknown> = Promise.resolve();
  #lostClaimAnswers = 0;
  #claimAnswersHeld: Promise<void> | undefined;
  #droppedCancels = 0;
  /** Servers whose notifications are lost (their listening connection is down). */
  readonly #deaf = new Set<string>();
  /** Servers whose reads of the changes wait (their feed falls behind). */
  readonly #slowReads = new Map<string, { held: Promise<void>; release: () => void }>();

  get revision(): bigint {
    return this.#revision;
  }

  /** A new server: its Cluster, and its Store over this database. */
  join(name: string, info: Partial<Pick<Announced, "modelTypes" | "dataAccess" | "shares">> = {}): { cluster: FakeCluster; store: Store } {
    const cluster = new FakeCluster(this, name, info);
    this.#servers.set(name, cluster);
    return { cluster, store: new FakeClusterStore(this, cluster) };
  }

  leave(name: string): void {
    this.#servers.get(name)?.stop();
    this.#servers.delete(name);
    for (const [id, update] of this.updates) if (update.owner === name) this.updates.delete(id);
  }

  get servers(): FakeCluster[] {
    return [...this.#servers.values()];
  }

  // ---- a test's hand on the database ----

  /** The next `times` writes of this kind that `when` matches fail with `error` (the database unreachable by default). */
  refuse(
    op: Refusable,
    when: (subject: Action | ModelRecord) => boolean = () => true,
    times = 1,
    error: Error = new PlinthError("unavailable", "the database is unreachable"),
  ): void {
    this.#refusals.push({ op, when, times, error });
  }

  /** Writes wait until the returned function is called. */
  hold(): () => void {
    return gate((held) => (this.#held = held));
  }

  /** Claims made from now take their calls at once, but their answers reach the servers only once the returned function is called. */
  holdClaimAnswers(): () => void {
    return gate((held) => (this.#claimAnswersHeld = held));
  }

  /** The next claim takes its calls, but its answer is lost with the connection (the server gets an error). */
  loseNextClaimAnswer(): void {
    this.#lostClaimAnswers++;
  }

  /** The next `n` cancel requests reach no server. */
  dropCancels(n = 1): void {
    this.#droppedCancels += n;
  }

  /**
   * The server's listening connection breaks: it hears no notice until the returned
   * function reconnects it, and then reads what changed meanwhile (as PostgresCluster does).
   */
  deafen(server: string): () => void {
    this.#deaf.add(server);
    return () => {
      this.#deaf.delete(server);
      const cluster = this.#servers.get(server);
      cluster?.events.emit("changes");
      cluster?.events.emit("work");
    };
  }

  /** The server's reads of the changes wait until the returned function lets them go: its feed falls behind. */
  holdChanges(server: string): () => void {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const entry = {
      held,
      release: () => {
        this.#slowReads.delete(server);
        release();
      },
    };
    this.#slowReads.set(server, entry);
    return entry.release;
  }

  /** Lets every held read go (a test's end: its servers close). */
  releaseReads(): void {
    for (const { release } of [...this.#slowReads.values()]) release();
  }

  /** Waits while the server's reads of the changes are held. */
  async readable(server: string): Promise<void> {
    await this.#slowReads.get(server)?.held;
  }

  /**
   * The server is gone (killed), as another server's sweep finds it: its claims go back to
   * the queue — one that never started as it was, one with a retry policy with its next
   * attempt (afterLoss) — and the rest end interrupted.
   */
  lose(server: string, why = "the server is gone"): Promise<void> {
    return this.#exclusive(async () => {
      this.#servers.get(server)?.stop();
      this.#servers.delete(server);
      const requeued: Action[] = [];
      const ended: Action[] = [];
      for (const entry of this.queue.values()) {
        if (entry.owner !== server) continue;
        const action = this.#actions.get(entry.actionId)!;
        const next = afterLoss(action, why);
        if (next) {
          entry.owner = undefined;
          requeued.push(next);
        } else ended.push(interruptedAction(action, why));
      }
      await this.#write(
        server,
        [...requeued, ...ended].map((action) => ({ action, claim: false })),
      );
    });
  }

  /** The action as the database holds it. */
  action(id: string): Action | undefined {
    return this.#actions.get(id);
  }

  /** The server holding the action's queue entry; undefined when it waits, null when it is not in the queue. */
  ownerOf(actionId: string): string | undefined | null {
    const entry = this.queue.get(actionId);
    return entry ? entry.owner : null;
  }

  /** Another server's write: an action as it changed there. */
  async writeAs(server: string, action: Action): Promise<void> {
    await this.write(server, [{ action, claim: false }]);
  }

  // ---- what the servers call ----

  data(): MemoryStore {
    return this.#data;
  }

  write(server: string, writes: ActionWrite[]): Promise<Map<string, bigint>> {
    return this.#exclusive(() => this.#write(server, writes));
  }

  async #write(server: string, writes: ActionWrite[]): Promise<Map<string, bigint>> {
    await this.#held;
    for (const w of writes) this.#check("write", w.action);
    for (const { action } of writes) if (isEnded(action)) this.queue.delete(action.id);
    // As one statement: each new call against the queue as it was before the write.
    const before = [...this.queue.values()];
    const mine = this.#sharesOf(server);
    const onModel = new Map<string, { n: number; chain: boolean }>();
    const fresh: string[] = [];
    for (const { action, payloads, claim } of writes) {
      if (!payloads?.request || isEnded(action)) continue;
      const { modelId, modelType } = action;
      const shared = action.call === ActionCall.PREDICT && this.#sharedInCluster(modelType);
      const here = shared && mine[modelType] !== undefined;
      const prior = onModel.get(modelId) ?? { n: 0, chain: true };
      const nth = prior.n + 1;
      const chain = prior.chain && claim && here;
      onModel.set(modelId, { n: nth, chain });
      if (this.queue.has(action.id)) continue;
      const taken =
        claim &&
        (modelId === "" ||
          (!this.#updateBefore(modelId) &&
            (here
              ? chain &&
                !before.some((e) => e.modelId === modelId && (!e.shared || e.owner === undefined)) &&
                this.#claimedOn(server, modelId) + nth <= mine[modelType]!
              : nth === 1 && !before.some((e) => e.modelId === modelId))));
      this.queue.set(action.id, {
        actionId: action.id,
        seq: ++this.#seq,
        request: payloads.request,
        modelId,
        modelType,
        dataAccess: [...new Set(action.dataAccess.map((d) => d.name))],
        enqueued: Date.now(),
        shared: shared && (here || !taken),
        owner: taken ? server : undefined,
      });
      fresh.push(action.id);
    }
    const claimed = new Map<string, bigint>();
    for (const id of fresh) {
      const entry = this.queue.get(id)!;
      if (entry.owner === server) claimed.set(id, await this.#modelRevision(entry.modelId));
    }
    const first = this.#revision + 1n;
    this.#revision += BigInt(writes.length);
    const changes: FeedChange[] = [];
    writes.forEach(({ action, payloads }, i) => {
      const held = this.#actions.get(action.id);
      // An ended action never changes again.
      if (held && isEnded(held)) return;
      changes.push(this.#putAction(action, payloads, first + BigInt(i)));
    });
    this.#committed(server, first, this.#revision, changes);
    return claimed;
  }

  putModel(server: string, model: ModelRecord, ended?: EndedWith, update?: string): Promise<ModelMeta | undefined> {
    return this.#exclusive(() => this.#putModel(server, model, ended, update));
  }

  async #putModel(server: string, model: ModelRecord, ended?: EndedWith, update?: string): Promise<ModelMeta | undefined> {
    await this.#held;
    this.#check("putModel", model);
    if (update !== undefined) {
      const place = this.updates.get(update);
      if (!place) throw new PlinthError("internal", `the update of model ${model.id} lost its place in the model's queue`);
      if ([...this.queue.values()].some((e) => e.modelId === model.id && (e.owner || e.seq < place.seq))) return undefined;
      if (this.#updateBefore(model.id, place.seq)) return undefined;
      this.updates.delete(update);
    }
    const current = await this.#data.getModel(model.id);
    if (current && current.revision !== model.revision - 1n) {
      throw new PlinthError(
        "failed_precondition",
        `model ${model.id} changed meanwhile: another call stored a revision after ${model.revision - 1n} first; retry on its latest revision`,
      );
    }
    let end: StoredAction | undefined;
    const meta = await this.#data.putModel(
      model,
      ended &&
        ((stored) => {
          end = ended(stored);
          const held = this.#actions.get(end.action.id);
          if (held && isEnded(held)) {
            throw new PlinthError(
              "failed_precondition",
              `action ${end.action.id} had ended already (another server ended it): its revision is not stored`,
            );
          }
          return end;
        }),
    );
    const first = this.#revision + 1n;
    const changes: FeedChange[] = [{ revision: ++this.#revision, kind: "model", model: meta }];
    this.#rows.delete(`d:${model.id}`);
    this.#rows.set(`m:${model.id}`, changes[0]!);
    if (end) {
      this.queue.delete(end.action.id);
      changes.push(this.#putAction(end.action, undefined, ++this.#revision, false));
    }
    this.#committed(server, first, this.#revision, changes);
    return meta;
  }

  deleteModel(id: string): Promise<boolean> {
    return this.#exclusive(() => this.#deleteModel(id));
  }

  async #deleteModel(id: string): Promise<boolean> {
    await this.#held;
    const busy = [...this.queue.values(), ...this.updates.values()].filter((e) => e.modelId === id).length;
    if (busy > 0) {
      throw new PlinthError(
        "failed_precondition",
        `model ${id} has ${busy} queued or running action(s); cancel them (CancelAction) or wait for them, then delete`,
      );
    }
    if (!(await this.#data.deleteModel(id))) return false;
    this.#rows.delete(`m:${id}`);
    const change: FeedChange = { revision: ++this.#revision, kind: "model_deleted", modelId: id };
    this.#rows.set(`d:${id}`, change);
    this.history.push(change);
    this.#notify("changes");
    return true;
  }

  settleEnd(server: string, action: Action): Promise<Action> {
    return this.#exclusive(async () => {
      const held = this.#actions.get(action.id);
      if (held && isEnded(held)) return held;
      await this.#write(server, [{ action, claim: false }]);
      return action;
    });
  }

  snapshot(): { revision: bigint; actions: Action[] } {
    return { revision: this.#revision, actions: [...this.#actions.values()].filter((a) => !isEnded(a)) };
  }

  changes(after: bigint, limit: number): FeedChange[] {
    return [...this.#rows.values()]
      .filter((c) => c.revision > after)
      .sort((a, b) => (a.revision < b.revision ? -1 : 1))
      .slice(0, limit);
  }

  claim(server: string, n: number, scope: ClaimScope): Promise<ClaimedAction[]> {
    const claimed = this.#exclusive(() => this.#claim(server, n, scope));
    // Not a turn later than the database's answer unless held: the other rules' tests count on its timing.
    const held = this.#claimAnswersHeld;
    return held === undefined ? claimed : claimed.then((answer) => held.then(() => answer));
  }

  async #claim(server: string, n: number, { modelTypes, dataAccess, held, affinityMs }: ClaimScope): Promise<ClaimedAction[]> {
    const entries = [...this.queue.values()].sort((a, b) => a.seq - b.seq);
    const mine = this.#sharesOf(server);
    const nth = new Map<string, number>();
    const ready = entries.flatMap((c) => {
      if (c.owner !== undefined || !modelTypes.includes(c.modelType) || !c.dataAccess.every((name) => dataAccess.includes(name))) return [];
      const here = c.shared && mine[c.modelType] !== undefined;
      const open =
        c.modelId === "" ||
        (here
          ? !entries.some((e) => e.modelId === c.modelId && e.seq < c.seq && !e.shared)
          : !entries.some((e) => e.modelId === c.modelId && (e.seq < c.seq || e.owner !== undefined)));
      if (!open || this.#updateBefore(c.modelId, c.seq)) return [];
      nth.set(c.modelId, (nth.get(c.modelId) ?? 0) + 1);
      if (c.modelId !== "" && here && nth.get(c.modelId)! + this.#claimedOn(server, c.modelId) > mine[c.modelType]!) return [];
      return [{ entry: c, here }];
    });
    // The highest priority first; then calls on held models, unless an older one has waited past affinityMs; then callers' turns.
    const first = (c: QueueEntry) => affinityMs <= 0 || held.includes(c.modelId) || c.enqueued <= Date.now() - affinityMs;
    const own = (c: QueueEntry) => this.#actions.get(c.actionId)?.priority || 3;
    const priority = (c: QueueEntry) => (c.modelId === "" ? own(c) : Math.min(...entries.filter((e) => e.modelId === c.modelId).map(own)));
    const turns = new Map<string, number>();
    const counted = new Map<string, number>();
    for (const e of entries) {
      const key = `${own(e)}\0${this.#actions.get(e.actionId)?.createdBy ?? ""}`;
      counted.set(key, (counted.get(key) ?? 0) + 1);
      turns.set(e.actionId, counted.get(key)!);
    }
    const turn = (c: QueueEntry) => turns.get(c.actionId)!;
    const callerOf = (c: QueueEntry) => `${own(c)}\0${this.#actions.get(c.actionId)?.createdBy ?? ""}`;
    const served = (c: QueueEntry) => this.#served.get(callerOf(c)) ?? 0;
    const picked = ready
      .sort(
        (a, b) =>
          priority(a.entry) - priority(b.entry) ||
          Number(first(b.entry)) - Number(first(a.entry)) ||
          turn(a.entry) - turn(b.entry) ||
          served(a.entry) - served(b.entry) ||
          a.entry.seq - b.entry.seq,
      )
      .slice(0, n);
    for (const { entry } of picked) this.#served.set(callerOf(entry), ++this.#turns);
    const claimed: ClaimedAction[] = [];
    for (const { entry, here } of picked) {
      entry.owner = server;
      entry.shared = here;
      claimed.push({ action: this.#actions.get(entry.actionId)!, request: entry.request, modelRevision: await this.#modelRevision(entry.modelId) });
    }
    this.requests.push({ server, op: "claim", n, claimed: picked.map((p) => p.entry.actionId) });
    if (this.#lostClaimAnswers > 0 && claimed.length > 0) {
      this.#lostClaimAnswers--;
      throw new PlinthError("unavailable", "the database became unreachable before the claim's answer came");
    }
    return claimed;
  }

  takeQueued(server: string, actionId: string): Promise<Action | undefined> {
    return this.#exclusive(async () => this.#takeQueued(server, actionId));
  }

  #takeQueued(server: string, actionId: string): Action | undefined {
    const entry = this.queue.get(actionId);
    const taken = entry !== undefined && entry.owner === undefined;
    this.requests.push({ server, op: "takeQueued", actionId, taken });
    if (!taken) return undefined;
    entry.owner = server;
    return this.#actions.get(actionId);
  }

  queueUpdate(server: string, id: string, modelId: string): Promise<void> {
    return this.#exclusive(async () => {
      await this.#held;
      if (!this.updates.has(id)) this.updates.set(id, { seq: ++this.#seq, modelId, owner: server });
    });
  }

  dropUpdate(id: string): void {
    if (this.updates.delete(id)) this.#notify("work");
  }

  owned(server: string): string[] {
    return [...this.queue.values()].filter((e) => e.owner === server).map((e) => e.actionId);
  }

  release(server: string, actionIds: string[], why: string): Promise<void> {
    return this.#exclusive(() => this.#release(server, actionIds, why));
  }

  async #release(server: string, actionIds: string[], why: string): Promise<void> {
    this.requests.push({ server, op: "release", actionIds, why });
    const ended: Action[] = [];
    for (const id of actionIds) {
      const entry = this.queue.get(id);
      if (entry?.owner !== server) continue;
      const action = this.#actions.get(id)!;
      if (action.status === ActionStatus.QUEUED && !action.startTime) entry.owner = undefined;
      else ended.push(interruptedAction(action, why));
    }
    if (ended.length > 0)
      await this.#write(
        server,
        ended.map((action) => ({ action, claim: false })),
      );
    else {
      this.#notify("changes");
      this.#notify("work");
    }
  }

  requestCancel(server: string, actionId: string, by: string): void {
    this.requests.push({ server, op: "requestCancel", actionId, by });
    if (this.#droppedCancels > 0) {
      this.#droppedCancels--;
      return;
    }
    this.#notify("cancel", actionId, by);
  }

  // ---- inside ----

  /** The model types whose predicts the server runs shared, with its share of one model. */
  #sharesOf(server: string): Record<string, number> {
    return this.#servers.get(server)?.info.shares ?? {};
  }

  /** Whether a predict of this type is shared: every server declaring the type runs it shared (and one does). */
  #sharedInCluster(modelType: string): boolean {
    const declaring = this.servers.filter((s) => s.info.modelTypes.includes(modelType) || s.info.shares[modelType] !== undefined);
    return declaring.length > 0 && declaring.every((s) => s.info.shares[modelType] !== undefined);
  }

  /** Whether an update is queued on the model (before `seq`). */
  #updateBefore(modelId: string, seq = Number.POSITIVE_INFINITY): boolean {
    for (const u of this.updates.values()) if (u.modelId === modelId && u.seq < seq) return true;
    return false;
  }

  /** Calls on the model the server has claimed. */
  #claimedOn(server: string, modelId: string): number {
    let n = 0;
    for (const e of this.queue.values()) if (e.modelId === modelId && e.owner === server) n++;
    return n;
  }

  #exclusive<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.#lock.then(operation);
    this.#lock = result.catch(() => {});
    return result;
  }

  #putAction(action: Action, payloads: StoredPayloads | undefined, revision: bigint, write = true): FeedChange {
    const { request: _, ...kept } = payloads ?? {};
    this.#actions.set(action.id, action);
    if (write) void this.#data.putAction(action, payloads ? kept : undefined);
    const change: FeedChange = { revision, kind: "action", action };
    this.#rows.set(`a:${action.id}`, change);
    return change;
  }

  async #modelRevision(modelId: string): Promise<bigint> {
    return modelId ? ((await this.#data.getModel(modelId))?.revision ?? 0n) : 0n;
  }

  #committed(server: string, first: bigint, last: bigint, changes: FeedChange[]): void {
    this.history.push(...changes);
    this.#servers.get(server)?.keepOwn(first, changes);
    this.#notify("changes", { server, first, last });
    if ([...this.queue.values()].some((e) => e.owner === undefined)) this.#notify("work");
  }

  /** Every server hears it, after the commit, in commit order (as PostgreSQL's NOTIFY). */
  #notify<K extends keyof ClusterEvents>(event: K, ...args: ClusterEvents[K]): void {
    const servers = this.servers.filter((s) => !this.#deaf.has(s.server));
    queueMicrotask(() => {
      for (const server of servers) (server.events.emit as (e: K, ...a: ClusterEvents[K]) => boolean)(event, ...args);
    });
  }

  #check(op: Refusable, subject: Action | ModelRecord): void {
    const refusal = this.#refusals.find((r) => r.op === op && r.times > 0 && r.when(subject));
    if (!refusal) return;
    refusal.times--;
    throw refusal.error;
  }
}

/** One server's view of the FakeDatabase as the Cluster interface gives it. */
export class FakeCluster implements Cluster {
  readonly server: string;
  readonly events = new EventEmitter<ClusterEvents>();
  /** A fake server keeps its lease: losing one is the real cluster's test (postgres-cluster). */
  readonly leaseLost = new Promise<string>(() => {});
  readonly #db: FakeDatabase;
  readonly #own = new Map<bigint, FeedChange[]>();
  #info: Announced;
  readonly #since = new Date();
  readonly #tick: ReturnType<typeof setInterval>;

  constructor(db: FakeDatabase, server: string, info: Partial<Pick<Announced, "modelTypes" | "dataAccess" | "shares">>) {
    this.#db = db;
    this.server = server;
    this.#info = { address: "", modelTypes: info.modelTypes ?? [], dataAccess: info.dataAccess ?? [], plugins: [], shares: info.shares ?? {} };
    this.events.setMaxListeners(0);
    this.#tick = setInterval(() => {
      this.events.emit("changes");
      this.events.emit("work");
    }, TICK_MS);
    this.#tick.unref();
  }

  stop(): void {
    clearInterval(this.#tick);
  }

  keepOwn(first: bigint, changes: FeedChange[]): void {
    this.#own.set(first, changes);
  }

  async snapshot(): Promise<{ revision: bigint; models: ModelMeta[]; actions: Action[] }> {
    const { revision, actions } = this.#db.snapshot();
    return { revision, models: await this.#db.data().allModels(), actions };
  }

  async changes(after: bigint, limit: number): Promise<FeedChange[]> {
    await this.#db.readable(this.server);
    return this.#db.changes(after, limit);
  }

  async enqueue(action: Action, payloads: StoredPayloads, claim: boolean): Promise<bigint | undefined> {
    return (await this.#db.write(this.server, [{ action, payloads, claim }])).get(action.id);
  }

  claim(n: number, scope: ClaimScope): Promise<ClaimedAction[]> {
    return this.#db.claim(this.server, n, scope);
  }

  async ownChanges(first: bigint, _waitMs: number): Promise<FeedChange[] | undefined> {
    const changes = this.#own.get(first);
    this.#own.delete(first);
    return changes;
  }

  forgetOwn(upTo: bigint): void {
    for (const first of this.#own.keys()) if (first <= upTo) this.#own.delete(first);
  }

  takeQueued(actionId: string): Promise<Action | undefined> {
    return this.#db.takeQueued(this.server, actionId);
  }

  queueUpdate(id: string, modelId: string): Promise<void> {
    return this.#db.queueUpdate(this.server, id, modelId);
  }

  putModelQuiet(model: ModelRecord, update: string): Promise<ModelMeta | undefined> {
    return this.#db.putModel(this.server, model, undefined, update);
  }

  async dropUpdate(id: string): Promise<void> {
    this.#db.dropUpdate(id);
  }

  async owned(): Promise<string[]> {
    return this.#db.owned(this.server);
  }

  release(actionIds: string[], why: string): Promise<void> {
    return this.#db.release(this.server, actionIds, why);
  }

  async requestCancel(actionId: string, by: string): Promise<void> {
    this.#db.requestCancel(this.server, actionId, by);
  }

  async announce(info: Announced): Promise<void> {
    this.#info = info;
  }

  get info(): Announced {
    return this.#info;
  }

  async servers(): Promise<ServerInfo[]> {
    return this.#db.servers.map((s) => {
      const { shares: _, ...info } = s.info;
      return { name: s.server, host: "fake", pid: 0, since: s.#since, ...info, self: s === this };
    });
  }
}

/** One server's Store: reads from the database's tables, writes through its rules. */
class FakeClusterStore implements Store {
  readonly id = "fakedb";
  readonly owner: string;
  readonly #cluster: FakeCluster;
  readonly #db: FakeDatabase;

  constructor(db: FakeDatabase, cluster: FakeCluster) {
    this.#db = db;
    this.#cluster = cluster;
    this.owner = `fakedb.${cluster.server}`;
  }

  getModel(id: string, revision?: bigint): Promise<ModelRecord | undefined> {
    return this.#db.data().getModel(id, revision);
  }

  async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    return (await this.#db.putModel(this.#cluster.server, model, ended))!;
  }

  deleteModel(id: string): Promise<boolean> {
    return this.#db.deleteModel(id);
  }

  allModels(): Promise<ModelMeta[]> {
    return this.#db.data().allModels();
  }

  listModels(query: ListModelsQuery): Promise<ModelMeta[]> {
    return this.#db.data().listModels(query);
  }

  async putAction(action: Action, payloads?: StoredPayloads): Promise<void> {
    await this.#db.write(this.#cluster.server, [{ action, payloads, claim: false }]);
  }

  getAction(id: string, withPayloads?: boolean): Promise<StoredAction | undefined> {
    return this.#db.data().getAction(id, withPayloads);
  }

  settleEnd(action: Action): Promise<Action> {
    return this.#db.settleEnd(this.#cluster.server, action);
  }

  listActions(query: ListActionsQuery, withPayloads?: boolean): Promise<StoredAction[]> {
    return this.#db.data().listActions(query, withPayloads);
  }

  async unfinishedActions(): Promise<Action[]> {
    return this.#db.snapshot().actions;
  }

  async revisionMadeBy(_action: Action): Promise<ModelMeta | undefined> {
    return undefined;
  }

  pendingRequest(actionId: string): Promise<PendingRequest> {
    return this.#db.data().pendingRequest(actionId);
  }

  pruneActions(now: Date): Promise<number> {
    return this.#db.data().pruneActions(now);
  }

  claimRequest(claim: RequestClaim, now: Date): Promise<RequestClaim | undefined> {
    return this.#db.data().claimRequest(claim, now);
  }

  releaseRequest(claim: RequestClaim): Promise<void> {
    return this.#db.data().releaseRequest(claim);
  }

  settleRequest(claim: RequestClaim, outcome: string): Promise<void> {
    return this.#db.data().settleRequest(claim, outcome);
  }

  async trackChild(_child: TrackedChild): Promise<void> {}
  async untrackChild(_pid: number): Promise<void> {}
  async trackedChildren(): Promise<TrackedChild[]> {
    return [];
  }
  async clearTrackedChildren(): Promise<void> {}
  async close(): Promise<void> {}
}
