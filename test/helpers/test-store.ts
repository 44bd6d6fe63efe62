/**
 * The memory store with a test's hand on its writes: refuse chosen ones (a store that is
 * unreachable or full), hold them until released (a slow disk), and a log of what came
 * in which write.
 */
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { PlinthError } from "../../server/errors.ts";
import type { MemoryOptions } from "../../server/store/memory.ts";
import { MemoryStore } from "../../server/store/memory.ts";
import type { EndedWith, ModelMeta, ModelRecord, StoredPayloads } from "../../server/store/store.ts";

type Write = "putAction" | "putModel";

/** One write as the store got it: an action, or a model revision with the action it ends (if any). */
export type Logged = { write: "putAction"; action: Action; lingerMs: number } | { write: "putModel"; model: ModelRecord; ended: Action | undefined };

interface Refusal {
  write: Write;
  when: (subject: Action | ModelRecord) => boolean;
  times: number;
  error: Error;
}

export class TestStore extends MemoryStore {
  /** Every write taken, in order. */
  readonly log: Logged[] = [];
  readonly #refusals: Refusal[] = [];
  readonly #held = new Map<Write, Promise<void>>();
  /** Inside putModel: its action's end is part of that write, not one of its own. */
  #inModel = false;

  constructor(options: Partial<MemoryOptions> = {}) {
    super({ keepRevisions: 5, maxActions: 100_000, maxActionAgeMs: 30 * 24 * 3600_000, ...options });
  }

  /** The next `times` writes of this kind that `when` matches fail with `error` (an unreachable store by default). */
  refuse(
    write: Write,
    when: (subject: Action | ModelRecord) => boolean = () => true,
    times = 1,
    error: Error = new PlinthError("unavailable", "the store is unreachable"),
  ): void {
    this.#refusals.push({ write, when, times, error });
  }

  /** Writes of this kind wait until the returned function is called. */
  hold(write: Write): () => void {
    let release!: () => void;
    this.#held.set(write, new Promise<void>((resolve) => (release = resolve)));
    return () => {
      this.#held.delete(write);
      release();
    };
  }

  /** One action's writes, in order: each status, and how long the write could linger for the next (Store.putAction). */
  lingerOf(actionId: string): [Action["status"], number][] {
    return this.log.flatMap((w) =>
      w.write === "putAction" && w.action.id === actionId ? [[w.action.status, w.lingerMs] as [Action["status"], number]] : [],
    );
  }

  /** The actions' statuses as stored by each write, in order, for one action. */
  statusesOf(actionId: string): Action["status"][] {
    return this.log.flatMap((w) =>
      w.write === "putAction" && w.action.id === actionId
        ? [w.action.status]
        : w.write === "putModel" && w.ended?.id === actionId
          ? [w.ended.status]
          : [],
    );
  }

  override async putAction(action: Action, payloads?: StoredPayloads, lingerMs?: number): Promise<void> {
    if (this.#inModel) return super.putAction(action, payloads, lingerMs);
    await this.#held.get("putAction");
    this.#check("putAction", action);
    this.log.push({ write: "putAction", action, lingerMs: lingerMs ?? 0 });
    return super.putAction(action, payloads, lingerMs);
  }

  override async putModel(model: ModelRecord, ended?: EndedWith): Promise<ModelMeta> {
    await this.#held.get("putModel");
    this.#check("putModel", model);
    let end: Action | undefined;
    const recorded: EndedWith | undefined =
      ended &&
      ((meta) => {
        const stored = ended(meta);
        end = stored.action;
        return stored;
      });
    // The memory store writes the action's end synchronously within its putModel call.
    this.#inModel = true;
    let written: Promise<ModelMeta>;
    try {
      written = super.putModel(model, recorded);
    } finally {
      this.#inModel = false;
    }
    const meta = await written;
    this.log.push({ write: "putModel", model, ended: end });
    return meta;
  }

  #check(write: Write, subject: Action | ModelRecord): void {
    const refusal = this.#refusals.find((r) => r.write === write && r.times > 0 && r.when(subject));
    if (!refusal) return;
    refusal.times--;
    throw refusal.error;
  }
}
