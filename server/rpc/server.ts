/**
 * Assembles the server: store, process manager, plugins, engine, and the gRPC
 * services (ours, health, reflection) on one port. The only module that knows all
 * the parts.
 */
import { setMaxListeners } from "node:events";
import { join } from "node:path";
import { HealthImplementation } from "grpc-health-check";
import { createServer } from "nice-grpc";
import type { Logger } from "pino";
import { ActionService, file_plinth_v1_action_service } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService, file_plinth_v1_engine_service } from "../../gen/plinth/v1/engine_service_pb.ts";
import { file_plinth_v1_state_service, StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.ts";
import type { ResolvedConfig } from "../config/load.ts";
import { Engine } from "../engine/engine.ts";
import { loadPlugins } from "../engine/load-plugins.ts";
import { PlinthError } from "../errors.ts";
import { ProcessManager } from "../process/process-manager.ts";
import { reapOrphans, trackChildren } from "../process/orphans.ts";
import { openStore } from "../store/open.ts";
import { actionService } from "./action-service.ts";
import { engineService } from "./engine-service.ts";
import { errorMapper } from "./error-mapper.ts";
import { grpcJsBridge } from "./grpc-js-bridge.ts";
import { addReflection } from "./reflection.ts";
import { niceDefinition } from "./service-definition.ts";
import { type Coalesced } from "./coalesce.ts";
import { stateService, type WatchStats } from "./state-service.ts";
import type { StateEvent } from "../engine/state-hub.ts";

export interface PlinthServer extends AsyncDisposable {
  /** The port it listens on (the chosen one when the config says 0). */
  readonly port: number;
  readonly engine: Engine;
  readonly processes: ProcessManager;
  /** The open WatchState streams and what they hold. */
  watchStats(): WatchStats;
  /** Stops in order: refuse new work, end streams and actions, reap children, close the store and the port. Idempotent. */
  close(): Promise<void>;
}

const SERVICES = [EngineService, ActionService, StateService].map((s) => s.typeName);

export async function startServer(config: ResolvedConfig, logger: Logger): Promise<PlinthServer> {
  const { engine: e } = config;
  const processes = new ProcessManager({
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
  });
  const store = openStore(config.backend);
  await reapOrphans(store, logger);
  trackChildren(processes, store, logger);
  let refusing = false;
  /** Ends the streams, once the actions have ended. */
  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal); // One listener per open stream.
  let engine: Engine | undefined;
  const getEngine = () => {
    if (refusing) throw new PlinthError("shutting_down", "the server is shutting down");
    if (!engine) throw new PlinthError("unavailable", "the server is starting and loads its plugins; retry in a moment");
    return engine;
  };

  const server = createServer({
    "grpc.max_receive_message_length": e.max_frame_bytes,
    "grpc.max_send_message_length": e.max_frame_bytes,
  }).use(errorMapper(logger));
  server.add(niceDefinition(EngineService), engineService(getEngine));
  server.add(niceDefinition(ActionService), actionService(getEngine, stopping.signal));
  const watchers = new Set<Coalesced<StateEvent>>();
  server.add(niceDefinition(StateService), stateService(getEngine, stopping.signal, watchers));
  const health = new HealthImplementation(Object.fromEntries(["", ...SERVICES].map((s) => [s, "NOT_SERVING" as const])));
  const bridge = grpcJsBridge(server);
  health.addToServer(bridge);
  addReflection(bridge, [
    file_plinth_v1_engine_service,
    file_plinth_v1_action_service,
    file_plinth_v1_state_service,
    file_grpc_health_v1_health,
  ]);

  const [host] = config.server.address.split(/:(?=\d+$)/);
  const port = await server.listen(config.server.address);
  logger.info({ address: `${host}:${port}` }, "listening; loading plugins");

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      for (const s of ["", ...SERVICES]) health.setStatus(s, "NOT_SERVING");
      refusing = true;
      // Running actions end as cancelled; their waiters and watchers see that last update.
      await engine?.close();
      stopping.abort();
      await processes.close();
      await store.close();
      // Calls still in flight had their actions ended above; give them a moment to answer.
      const forced = setTimeout(() => server.forceShutdown(), 2000);
      await server.shutdown();
      clearTimeout(forced);
      logger.info("stopped");
    })());

  try {
    const plugins = await loadPlugins(config.plugins, processes);
    await processes.warmUp();
    engine = await Engine.open({
      store,
      processes,
      plugins,
      logger,
      maxQueue: e.max_queue,
      stateHistory: e.state_history,
      progressIntervalMs: e.progress_interval * 1000,
      retainActions: e.retain_actions,
      retainActionsMs: e.retain_actions_seconds * 1000,
    });
    for (const p of plugins.plugins) {
      logger.info({ plugin: p.info.name, runtime: p.target.runtime, models: p.info.modelTypes.map((m) => m.name), dataAccess: p.info.dataAccess.map((d) => d.name) }, "plugin loaded");
    }
  } catch (error) {
    await close();
    throw error;
  }
  for (const s of ["", ...SERVICES]) health.setStatus(s, "SERVING");
  logger.info({ address: `${host}:${port}` }, "serving");
  const watchStats = () => ({ watchers: watchers.size, pending: [...watchers].reduce((n, w) => n + w.pending, 0) });
  return { port, engine, processes, watchStats, close, [Symbol.asyncDispose]: close };
}
