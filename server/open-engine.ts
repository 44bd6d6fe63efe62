/**
 * Composes the engine: its live state (a table, and a publisher that the table feeds on
 * one server and the database's feed feeds in a cluster), the parts every run uses, and
 * the runner that suits the store — a LocalRunner, or a ClusterRunner when several servers
 * share the database. The one place that knows both.
 */
import type { Logger } from "pino";
import { ClusterRunner } from "./cluster/cluster-runner.ts";
import type { Cluster } from "./cluster/types.ts";
import type { ResolvedConfig } from "./config/load.ts";
import type { LifecycleDeps } from "./engine/action-lifecycle.ts";
import type { PluginCalls } from "./engine/action-run.ts";
import { Engine } from "./engine/engine.ts";
import { LiveTable } from "./engine/live-table.ts";
import { LocalRunner } from "./engine/local-runner.ts";
import { ModelCache } from "./engine/model-cache.ts";
import { ModelLocks } from "./engine/model-locks.ts";
import type { PluginRegistry } from "./engine/plugins.ts";
import { PredictBatches } from "./engine/predict-batches.ts";
import { forgetSuperseded } from "./engine/resident-janitor.ts";
import { StatePublisher } from "./engine/state-publisher.ts";
import type { Store } from "./store/store.ts";

const MiB = 2 ** 20;

export function openEngine(
  config: ResolvedConfig,
  parts: { store: Store; cluster: Cluster | undefined; processes: PluginCalls; plugins: PluginRegistry; logger: Logger },
): Promise<Engine> {
  const e = config.engine;
  const { cluster } = parts;
  const publisher = new StatePublisher(e.state_history);
  // Children drop the revisions that a new one superseded, and deleted models (both runners publish here).
  forgetSuperseded(publisher, parts.processes);
  const table = new LiveTable(
    {
      maxQueue: e.max_queue,
      maxQueuePerCaller: config.server.limits.queued_per_caller,
      maxInflightBytes: e.max_inflight_mb * MiB,
      retainActions: e.retain_actions,
      retainActionsMs: e.retain_actions_seconds * 1000,
      retainBytes: e.retain_actions_mb * MiB,
    },
    // In a cluster the database's feed publishes, in its order.
    cluster ? undefined : publisher,
  );
  const instances = new ModelCache(e.model_cache_mb * MiB);
  const views = { inlineBytes: e.inline_payload_bytes, maxJsonValueBytes: e.max_json_value_bytes };
  const limits = { maxArgs: e.max_args, maxKwargs: e.max_kwargs, maxDataAccess: e.max_data_access, maxDataAccessDepth: e.max_data_access_depth };
  const batches = new PredictBatches(parts.processes);
  const deps: LifecycleDeps = {
    ...parts,
    table,
    locks: new ModelLocks(),
    batches,
    instances,
    views,
    maxStoredPayloadBytes: config.backend.max_payload_bytes,
    progressIntervalMs: e.progress_interval * 1000,
  };
  const runner = cluster
    ? new ClusterRunner(deps, { cluster, publisher, maxRunning: e.max_children, claimAffinityMs: config.backend.claim_affinity_ms, limits })
    : new LocalRunner(deps, limits);
  return Engine.open({
    ...parts,
    table,
    publisher,
    runner,
    instances,
    serving: batches.events,
    limits,
    views,
    pageBytes: e.max_page_mb * MiB,
    watcherQueueBytes: e.watcher_queue_mb * MiB,
    everyUpdate: e.progress_interval === 0,
    visibility: config.server.auth?.visibility ?? "own",
  });
}
