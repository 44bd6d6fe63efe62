/**
 * The composition root: compiles the config into each part's options and assembles
 * store, process manager, plugins, engine and the gRPC transport; stops them in order.
 * The only module that knows all the parts.
 */
import { join } from "node:path";
import type { Logger } from "pino";
import type { ResolvedConfig } from "./config/load.ts";
import { Engine } from "./engine/engine.ts";
import { loadPlugins } from "./engine/load-plugins.ts";
import { PlinthError } from "./errors.ts";
import { reapOrphans, trackChildren } from "./process/orphans.ts";
import { ProcessManager } from "./process/process-manager.ts";
import { createGrpcServer } from "./rpc/grpc-server.ts";
import { openStore } from "./store/open.ts";

const MiB = 1024 * 1024;

export interface PlinthServer extends AsyncDisposable {
  /** The port it listens on (the chosen one when the config says 0). */
  readonly port: number;
  readonly engine: Engine;
  readonly processes: ProcessManager;
  /** Stops in order: refuse new work, end actions and streams, reap children, close the store and the port. Idempotent. */
  close(): Promise<void>;
}

function processOptions(e: ResolvedConfig["engine"], logger: Logger): ConstructorParameters<typeof ProcessManager>[0] {
  return {
    maxChildren: e.max_children,
    sigtermTimeoutMs: e.sigterm_timeout * 1000,
    checkChildrenPeriodMs: e.check_children_period * 1000,
    maxFrameBytes: e.max_frame_bytes,
    logTailLines: e.log_tail_lines,
    denoDir: process.env.DENO_DIR ?? join(process.cwd(), "node_modules/.cache/deno"),
    progressIntervalMs: e.progress_interval * 1000,
    reuseWorkers: e.reuse_workers,
    maxCallsPerWorker: e.max_calls_per_worker,
    idleWorkerTimeoutMs: e.idle_worker_timeout * 1000,
    minIdleWorkers: e.min_idle_workers,
    logger,
  };
}

function engineOptions(config: ResolvedConfig) {
  const e = config.engine;
  return {
    maxQueue: e.max_queue,
    maxInflightBytes: e.max_inflight_mb * MiB,
    stateHistory: e.state_history,
    progressIntervalMs: e.progress_interval * 1000,
    retainActions: e.retain_actions,
    retainActionsMs: e.retain_actions_seconds * 1000,
    retainBytes: e.retain_actions_mb * MiB,
    limits: { maxArgs: e.max_args, maxKwargs: e.max_kwargs, maxDataAccess: e.max_data_access, maxDataAccessDepth: e.max_data_access_depth },
    views: { inlineBytes: e.inline_payload_bytes, maxJsonValueBytes: e.max_json_value_bytes },
    maxStoredPayloadBytes: config.backend.max_payload_bytes,
    watcherQueueBytes: e.watcher_queue_mb * MiB,
    pageBytes: e.max_page_mb * MiB,
  };
}

export async function startServer(config: ResolvedConfig, logger: Logger): Promise<PlinthServer> {
  const processes = new ProcessManager(processOptions(config.engine, logger));
  const store = openStore(config.backend);
  await reapOrphans(store, logger);
  trackChildren(processes, store, logger);
  let engine: Engine | undefined;
  let refusing = false;
  const getEngine = () => {
    if (refusing) throw new PlinthError("shutting_down", "the server is shutting down");
    if (!engine) throw new PlinthError("unavailable", "the server is starting and loads its plugins; retry in a moment");
    return engine;
  };
  const grpc = createGrpcServer(getEngine, { maxMessageBytes: config.engine.max_frame_bytes, logger });
  const port = await grpc.listen(config.server.address);
  const [host] = config.server.address.split(/:(?=\d+$)/);
  logger.info({ address: `${host}:${port}` }, "listening; loading plugins");

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      grpc.setServing(false);
      refusing = true;
      // Running actions end as cancelled; their waiters and watchers see that last update.
      await engine?.close();
      await processes.close();
      await store.close();
      // Calls still in flight had their actions ended above; give them a moment to answer.
      await grpc.shutdown(2000);
      logger.info("stopped");
    })());

  try {
    const plugins = await loadPlugins(config.plugins, processes);
    await processes.warmUp();
    engine = await Engine.open({ ...engineOptions(config), store, processes, plugins, logger });
    for (const p of plugins.plugins) {
      const { name, modelTypes, dataAccess } = p.info;
      logger.info(
        { plugin: name, runtime: p.target.runtime, models: modelTypes.map((m) => m.name), dataAccess: dataAccess.map((d) => d.name) },
        "plugin loaded",
      );
    }
  } catch (error) {
    await close();
    throw error;
  }
  grpc.setServing(true);
  logger.info({ address: `${host}:${port}` }, "serving");
  return { port, engine, processes, close, [Symbol.asyncDispose]: close };
}
