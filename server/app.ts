/**
 * The composition root: compiles the config into each part's options and assembles
 * store, process manager, plugins, engine and the gRPC transport; stops them in order.
 * The only module that knows all the parts.
 *
 * Start-up validates before it binds: the config, then the store (which only one live
 * server may hold), then the plugins; the port opens last, already SERVING.
 */
import type { EventEmitter } from "node:events";
import { join } from "node:path";
import type { Logger } from "pino";
import type { ResolvedConfig } from "./config/load.ts";
import type { Engine } from "./engine/engine.ts";
import { loadPlugins } from "./engine/load-plugins.ts";
import { type PluginWatcher, type ReloadEvents, watchPlugins } from "./engine/plugin-watch.ts";
import { PlinthError } from "./errors.ts";
import { Metrics } from "./metrics/metrics.ts";
import { openEngine } from "./open-engine.ts";
import { buildNodeEntry, type NodeBuild } from "./process/node-entry.ts";
import { reapOrphans, trackChildren } from "./process/orphans.ts";
import { processAlive } from "./process/proc.ts";
import { ProcessManager } from "./process/process-manager.ts";
import { callStack } from "./rpc/call-stack.ts";
import { createHttpListener, type HttpListener } from "./rpc/connect-server.ts";
import { dashboardFiles } from "./rpc/dashboard-files.ts";
import { createGrpcServer, type GrpcServer } from "./rpc/grpc-server.ts";
import { openBackend } from "./store/open.ts";

export interface PlinthServer extends AsyncDisposable {
  /** The port it listens on (the chosen one when the config says 0). */
  readonly port: number;
  /** The metrics listener's port, when metrics.address is set. */
  readonly metricsPort?: number | undefined;
  /** The Connect and gRPC-Web listener's port, when http.address is set. */
  readonly httpPort?: number | undefined;
  readonly engine: Engine;
  readonly processes: ProcessManager;
  /** Stops in order: refuse new work, end actions and streams, reap children, close the store and the port. Idempotent. */
  close(): Promise<void>;
  /** Hurries a stop: every plugin child (its group and descendants) gets SIGKILL now. */
  kill(): void;
  /** Reads the TLS files again (SIGHUP); new connections use them. False when the server has no TLS. */
  reloadTls(): Promise<boolean>;
  /**
   * Resolves with why, if the server stops serving by itself: it lost its lease on a
   * PostgreSQL database (another server may have taken over). Never resolves otherwise.
   */
  readonly failed: Promise<string>;
  /** Watched plugins' reloads: "reloaded" once new code serves, "failed" when it did not load. */
  readonly reloads: EventEmitter<ReloadEvents>;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$/;

/** An address other machines reach needs authentication or TLS, or an explicit insecure: true. */
function refuseExposure(config: ResolvedConfig): void {
  const { auth, tls, insecure } = config.server;
  const authenticated = (auth?.tokens.length ?? 0) > 0 || (auth?.certificates.length ?? 0) > 0 || tls?.client_ca !== undefined;
  if (authenticated || tls || insecure) return;
  for (const [key, address] of [
    ["server.address", config.server.address],
    ["http.address", config.http.address],
  ] as const) {
    if (address === undefined || LOOPBACK.test(address.slice(0, address.lastIndexOf(":")))) continue;
    throw new PlinthError(
      "invalid_argument",
      `config ${key}: ${address} is reachable from other machines, and the server has neither authentication (server.auth) nor TLS (server.tls): anyone could run its plugins; configure them (README: Running on a network), or set server.insecure: true to serve it as it is`,
    );
  }
}

function processOptions(
  config: ResolvedConfig,
  owner: string,
  logger: Logger,
  node: NodeBuild | undefined,
): ConstructorParameters<typeof ProcessManager>[0] {
  const e = config.engine;
  return {
    maxChildren: e.max_children,
    sigtermTimeoutMs: e.sigterm_timeout * 1000,
    cancelGraceMs: e.cancel_grace_seconds * 1000,
    checkChildrenPeriodMs: e.check_children_period * 1000,
    maxFrameBytes: e.max_frame_bytes,
    logTailLines: e.log_tail_lines,
    denoDir: process.env.DENO_DIR ?? join(process.cwd(), "node_modules/.cache/deno"),
    progressIntervalMs: e.progress_interval * 1000,
    reuseWorkers: e.reuse_workers,
    maxCallsPerWorker: e.max_calls_per_worker,
    idleWorkerTimeoutMs: e.idle_worker_timeout * 1000,
    minIdleWorkers: e.min_idle_workers,
    denoBinary: e.deno_binary,
    node,
    displayBase: config.base,
    owner,
    logger,
  };
}

/**
 * Opens the store, loads the plugins, then serves. `signal` aborts a start under way
 * (a stop requested while plugins load); what was started is stopped again.
 */
export async function startServer(config: ResolvedConfig, logger: Logger, signal?: AbortSignal): Promise<PlinthServer> {
  refuseExposure(config);
  const metrics = config.metrics.address ? new Metrics() : undefined;
  // The store first: it refuses a database another live server holds, and a damaged one.
  let fail: (why: string) => void = () => {};
  const failed = new Promise<string>((resolve) => (fail = resolve));
  const { store, cluster } = await openBackend(config.backend, {
    onCommit: metrics?.storeCommit,
    onWarning: (message, error) => logger.warn({ err: error }, message),
    onInfo: (message) => logger.info(message),
    processAlive,
  });
  const processes = new ProcessManager(processOptions(config, store.owner, logger, await buildNodeEntry(logger)));
  // A lost lease stops this server's children at once: the server that took over runs the models now.
  void cluster?.leaseLost.then((message) => {
    logger.error(message);
    processes.kill();
    fail(message);
  });
  let engine: Engine | undefined;
  let grpc: GrpcServer | undefined;
  let http: HttpListener | undefined;
  let httpPort: number | undefined;
  let metricsListener: { port: number; close(): Promise<void> } | undefined;
  let watcher: PluginWatcher | undefined;
  let port = 0;
  const [host] = config.server.address.split(/:(?=\d+$)/);
  let refusing = false;
  const getEngine = () => {
    if (refusing) throw new PlinthError("shutting_down", "the server is shutting down");
    if (!engine) throw new PlinthError("unavailable", "the server is starting; retry in a moment");
    return engine;
  };

  // Aborted by kill(): a second signal cuts the drain short.
  const hurry = new AbortController();
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      grpc?.setServing(false);
      // Draining: new actions refused, reads and waits answered, what runs here goes on.
      const graceMs = config.engine.stop_grace_seconds * 1000;
      if (engine && graceMs > 0) {
        logger.info({ graceSeconds: config.engine.stop_grace_seconds }, "draining: new actions refused; what runs here may finish");
        await engine.drain(graceMs, hurry.signal);
      }
      refusing = true;
      watcher?.close();
      processes.drain();
      // Running actions end as cancelled; their waiters and watchers see that last update.
      await engine?.close();
      await processes.close();
      await store.close();
      // The calls still in flight had their actions ended above; idle connections close.
      await Promise.all([grpc?.shutdown(2000), http?.shutdown(2000)]);
      await metricsListener?.close();
      logger.info("stopped");
    })());

  try {
    await reapOrphans(store, logger);
    trackChildren(processes, store, logger);
    const plugins = await loadPlugins(config.plugins, processes, config.base, signal);
    await processes.warmUp();
    signal?.throwIfAborted();
    engine = await openEngine(config, { store, cluster, processes, plugins, logger });
    watcher = watchPlugins(config.plugins, plugins, processes, config.base, logger);
    for (const p of plugins.plugins) {
      const { name, modelTypes, dataAccess } = p.info;
      logger.info(
        { plugin: name, runtime: p.target.runtime, models: modelTypes.map((m) => m.name), dataAccess: dataAccess.map((d) => d.name) },
        "plugin loaded",
      );
      if (p.target.runtime === "node" && p.target.permissions) {
        logger.warn(
          { plugin: name },
          `${p.key}.permissions on Node guard against a plugin's mistakes, not against hostile code: Node 20 lets code that starts a worker or a process of its own leave its permission model; run code you do not trust with runtime: deno`,
        );
      }
    }
    signal?.throwIfAborted();
    const { tls, auth, limits } = config.server;
    const stack = callStack({
      logger,
      auth: auth && { tokens: auth.tokens, certificates: auth.certificates, openHealth: auth.open_health },
      mutualTls: tls?.client_ca !== undefined,
      streamsPerCaller: limits.streams_per_caller,
      maxRequestValues: limits.max_request_values,
    });
    grpc = await createGrpcServer(getEngine, {
      maxMessageBytes: config.engine.max_frame_bytes,
      keepaliveMs: limits.keepalive_seconds * 1000,
      logger,
      tls,
      stack,
    });
    port = await grpc.listen(config.server.address).catch((error: NodeJS.ErrnoException) => {
      throw new PlinthError("invalid_argument", `config server.address: cannot listen on ${config.server.address}: ${error.message}`, {
        cause: error,
      });
    });
    if (config.http.address) {
      const listener = createHttpListener(getEngine, {
        stack,
        logger,
        maxMessageBytes: config.engine.max_frame_bytes,
        tls,
        files: dashboardFiles(),
        browsers: {
          allowedHosts: config.http.allowed_hosts,
          corsOrigins: config.http.cors.allowed_origins,
          corsCredentials: config.http.cors.allow_credentials,
        },
      });
      http = listener;
      httpPort = await listener.listen(config.http.address).catch((error: NodeJS.ErrnoException) => {
        throw new PlinthError("invalid_argument", `config http.address: cannot listen on ${config.http.address}: ${error.message}`, { cause: error });
      });
      const [httpHost] = config.http.address.split(/:(?=\d+$)/);
      logger.info({ http: `${tls ? "https" : "http"}://${httpHost}:${httpPort}` }, "Connect and gRPC-Web");
    }
    if (metrics && config.metrics.address) {
      metrics.observe(engine, processes);
      metricsListener = await metrics.serve(config.metrics.address).catch((error: Error) => {
        throw new PlinthError("invalid_argument", `config metrics.address: cannot listen on ${config.metrics.address}: ${error.message}`);
      });
      logger.info({ metrics: `http://${config.metrics.address.replace(/:\d+$/, "")}:${metricsListener.port}/metrics` }, "metrics");
    }
    // A cluster's servers say where they serve and what they run (ListPlugins on any of them).
    if (cluster) {
      const announce = () => {
        const loaded = engine!.plugins;
        // The predicts of each concurrent model type this server runs at once on one model
        // (max_replicas; of a batched one, as many items as its batches hold).
        const shares: Record<string, number> = {};
        for (const name of loaded.modelTypeNames()) {
          const most = loaded.concurrentPredicts(name);
          const batch = loaded.batching(name);
          if (most !== undefined) shares[name] = batch ? batch.maxReplicas * batch.maxSize : most;
        }
        return cluster.announce({
          address: `${host}:${port}`,
          modelTypes: loaded.modelTypeNames(),
          dataAccess: loaded.dataAccessNames(),
          plugins: loaded.plugins.map((p) => p.info.name),
          shares,
        });
      };
      await announce();
      watcher.events.on(
        "reloaded",
        () => void announce().catch((error: unknown) => logger.warn({ err: error }, "announcing reloaded plugins failed")),
      );
    }
    grpc.setServing(true);
  } catch (error) {
    processes.kill();
    await close();
    throw error;
  }
  logger.info({ backend: config.backend.kind === "sqlite" ? config.backend.path : config.backend.kind, address: `${host}:${port}` }, "serving");
  // Clients and supervisors wait for this line: not for the log's next write.
  logger.flush();
  const served = grpc;
  return {
    port,
    metricsPort: metricsListener?.port,
    httpPort,
    engine,
    processes,
    close,
    kill: () => {
      hurry.abort();
      processes.kill();
    },
    reloadTls: async () => {
      await http?.reloadTls();
      return served.reloadTls();
    },
    reloads: watcher!.events,
    failed,
    [Symbol.asyncDispose]: close,
  };
}
