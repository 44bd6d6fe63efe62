/**
 * A cluster's feed into the live state: on each "changes" notice, reads the changes
 * after the last one applied, in revision order, and publishes them. One read at a time;
 * notices during a read make one more.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import type { Cluster, FeedChange, ModelMeta } from "../store/store.ts";
import type { FedChange, LiveState } from "./live-state.ts";

/** Changes read per query. */
const BATCH = 500;

/** The model as the API shows it, without its instance. */
export function modelMessage(meta: ModelMeta, instance?: Uint8Array): Model {
  return create(ModelSchema, {
    id: meta.id,
    modelType: meta.modelType,
    revision: meta.revision,
    createTime: timestampFromDate(meta.createTime),
    updateTime: timestampFromDate(meta.updateTime),
    instanceSize: BigInt(meta.instanceSize),
    actionId: meta.actionId,
    oldestRevision: meta.oldestRevision,
    ...(instance ? { instance } : {}),
  });
}

function fed(change: FeedChange): FedChange {
  return change.kind === "model" ? { revision: change.revision, kind: "model", model: modelMessage(change.model) } : change;
}

export class Feed {
  readonly #cluster: Cluster;
  readonly #live: LiveState;
  /** Whether this server runs the action: its own view stays. */
  readonly #owned: (actionId: string) => boolean;
  readonly #logger: Logger;
  #reading: Promise<void> | undefined;
  #again = false;
  #failures = 0;

  constructor(cluster: Cluster, live: LiveState, owned: (actionId: string) => boolean, logger: Logger) {
    this.#cluster = cluster;
    this.#live = live;
    this.#owned = owned;
    this.#logger = logger;
  }

  /** Reads what changed; resolves once the changes known now are applied. */
  pull(): Promise<void> {
    if (this.#reading !== undefined) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = this.#read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  async #read(): Promise<void> {
    do {
      this.#again = false;
      try {
        for (;;) {
          const changes = await this.#cluster.changes(this.#live.revision, BATCH);
          for (const change of changes) this.#live.apply(fed(change), change.kind === "action" && this.#owned(change.action.id));
          if (changes.length < BATCH) break;
        }
        this.#failures = 0;
      } catch (error) {
        // The next notice (or the cluster's tick, every second) reads again.
        if (this.#failures++ === 0) this.#logger.warn({ err: error }, "reading the cluster's changes failed; retrying");
        return;
      }
    } while (this.#again);
  }
}
