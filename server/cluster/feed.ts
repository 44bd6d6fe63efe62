/**
 * A cluster's feed into the live state: the database's notices of changes, handled one
 * at a time in the order it sent them (its commit order), and published with the
 * database's revisions. This server's own commits are applied as the store committed
 * them; for the others it reads the changes after the last one applied, in revision order.
 * An action this server runs keeps its own view (ahead of the feed); the others' views
 * are taken as they come.
 */
import type { Logger } from "pino";
import type { LiveTable } from "../engine/live-table.ts";
import type { StatePublisher } from "../engine/state-publisher.ts";
import { modelMessage } from "../store/model-message.ts";
import type { Cluster, CommittedBatch, FeedChange } from "./types.ts";

/** Changes read per query. */
const BATCH = 500;

/** How long a notice of this server's own commit waits for that commit's answer before reading instead. */
const OWN_WAIT_MS = 50;

export class Feed {
  readonly #cluster: Cluster;
  readonly #table: LiveTable;
  readonly #publisher: StatePublisher;
  /** The actions this server runs. */
  readonly #runs: { has(id: string): boolean };
  readonly #logger: Logger;
  /** Notices in the order the database sent them (commit order); undefined: read what changed. */
  readonly #notices: (CommittedBatch | undefined)[] = [];
  #working: Promise<void> | undefined;
  #failures = 0;

  constructor(cluster: Cluster, table: LiveTable, publisher: StatePublisher, runs: { has(id: string): boolean }, logger: Logger) {
    this.#cluster = cluster;
    this.#table = table;
    this.#publisher = publisher;
    this.#runs = runs;
    this.#logger = logger;
  }

  /**
   * A notice that something changed. This server's own commit, next in line, is applied
   * as the store committed it; anything else is read from the database. Resolves once
   * the notices known now are handled.
   */
  notice(batch?: CommittedBatch): Promise<void> {
    // Reads coalesce: one pending read covers any number of notices before it.
    if (batch !== undefined || this.#notices.at(-1) !== undefined || this.#notices.length === 0) this.#notices.push(batch);
    this.#working ??= this.#work().finally(() => (this.#working = undefined));
    return this.#working;
  }

  /** Reads everything after the last change applied. */
  pull(): Promise<void> {
    return this.notice();
  }

  async #work(): Promise<void> {
    while (this.#notices.length > 0) {
      const batch = this.#notices.shift();
      if (batch && batch.last <= this.#publisher.revision) continue;
      if (batch && batch.server === this.#cluster.server && batch.first === this.#publisher.revision + 1n) {
        const own = await this.#cluster.ownChanges(batch.first, OWN_WAIT_MS);
        if (own) {
          this.#apply(own);
          continue;
        }
      }
      await this.#read();
    }
    this.#cluster.forgetOwn(this.#publisher.revision);
  }

  #apply(changes: FeedChange[]): void {
    for (const change of changes) {
      const { revision } = change;
      if (revision <= this.#publisher.revision) continue;
      switch (change.kind) {
        case "model_deleted":
          this.#table.deleteModel(change.modelId);
          this.#publisher.record(revision, { kind: "model_deleted", modelId: change.modelId });
          break;
        case "model":
          this.#publisher.record(revision, { kind: "model_upserted", model: this.#table.putModel(modelMessage(change.model)) });
          break;
        case "action": {
          // Without its reported states (an ended action's, from the history): the live state does not carry them.
          const { action } = change;
          const view = Object.freeze(action.states.length ? { ...action, states: [] } : action);
          if (!this.#runs.has(view.id)) this.#table.holdRemote(view);
          this.#publisher.record(revision, { kind: "action_upserted", action: view });
        }
      }
    }
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const changes = await this.#cluster.changes(this.#publisher.revision, BATCH);
        this.#apply(changes);
        if (changes.length < BATCH) break;
      }
      this.#failures = 0;
    } catch (error) {
      // The next notice (or the cluster's tick, every second) reads again.
      if (this.#failures++ === 0) this.#logger.warn({ err: error }, "reading the cluster's changes failed; retrying");
    }
  }
}
