/** The store that the config's backend section asks for. */
import type { ResolvedConfig } from "../config/load.ts";
import { MemoryStore } from "./memory.ts";
import { SqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

export function openStore(backend: ResolvedConfig["backend"], onCommit?: (seconds: number) => void): Store {
  const common = {
    keepRevisions: backend.keep_revisions,
    maxActions: backend.max_actions,
    maxActionAgeMs: backend.max_action_age_days * 24 * 3600 * 1000,
  };
  if (backend.kind === "memory") return new MemoryStore(common);
  return new SqliteStore({
    ...common,
    path: backend.path,
    synchronous: backend.synchronous,
    maxSizeBytes: backend.max_size_mb === undefined ? undefined : backend.max_size_mb * 1024 * 1024,
    onCommit,
  });
}
