/**
 * The instances of the models this server used last, by revision, bounded in bytes
 * (engine.model_cache_mb): a predict on a model whose revision is known reads nothing
 * from the store. A revision never changes once stored, so an entry is right for as long
 * as the revision asked for is its own; least recently used ones go first.
 */
import type { ModelRecord } from "../store/store.ts";

export class ModelCache {
  readonly #maxBytes: number;
  /** In use order, least recent first. */
  readonly #entries = new Map<string, ModelRecord>();
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** The model at exactly this revision, if held. */
  get(id: string, revision: bigint): ModelRecord | undefined {
    const record = this.#entries.get(id);
    if (record?.revision !== revision) return undefined;
    this.#entries.delete(id);
    this.#entries.set(id, record);
    return record;
  }

  /** Holds the model's latest known revision (replacing an older one). */
  put(record: ModelRecord): void {
    this.delete(record.id);
    if (record.instance.byteLength > this.#maxBytes) return;
    this.#entries.set(record.id, record);
    this.#bytes += record.instance.byteLength;
    for (const [id, old] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(id);
      this.#bytes -= old.instance.byteLength;
    }
  }

  delete(id: string): void {
    const old = this.#entries.get(id);
    if (!old) return;
    this.#entries.delete(id);
    this.#bytes -= old.instance.byteLength;
  }
}
