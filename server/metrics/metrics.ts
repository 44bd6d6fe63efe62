/**
 * Prometheus metrics (prom-client) on a listener of their own (`metrics.address`, off by
 * default), read from what the parts already report — engine changes, process events,
 * store commits — so that nothing in the engine knows about them.
 */
import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { ActionCall, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import type { Engine } from "../engine/engine.ts";
import { isEnded } from "../engine/live-table.ts";
import type { ProcessManager } from "../process/process-manager.ts";

const calls: Record<number, string> = { [ActionCall.CREATE_INSTANCE]: "create_instance", [ActionCall.FIT]: "fit", [ActionCall.PREDICT]: "predict" };
const statuses: Record<number, string> = {
  [ActionStatus.SUCCEEDED]: "succeeded",
  [ActionStatus.FAILED]: "failed",
  [ActionStatus.CANCELLED]: "cancelled",
};
const seconds = (t: { seconds: bigint; nanos: number } | undefined) => (t ? Number(t.seconds) + t.nanos / 1e9 : undefined);

export class Metrics {
  readonly registry = new Registry();
  readonly #actions = new Counter({
    name: "plinth_actions_total",
    help: "Actions ended, by call, model type and status.",
    labelNames: ["call", "model_type", "status"],
    registers: [this.registry],
  });
  readonly #duration = new Histogram({
    name: "plinth_action_duration_seconds",
    help: "From an action's creation to its end.",
    labelNames: ["call", "model_type"],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600],
    registers: [this.registry],
  });
  readonly #queueWait = new Histogram({
    name: "plinth_action_queue_seconds",
    help: "From an action's creation to its start (its model free).",
    labelNames: ["call"],
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly #retries = new Counter({
    name: "plinth_action_retries_total",
    help: "Failed attempts of actions that their retry policy runs again, by the attempt's error code.",
    labelNames: ["call", "model_type", "code"],
    registers: [this.registry],
  });
  readonly #spawns = new Counter({ name: "plinth_child_spawns_total", help: "Plugin children started.", registers: [this.registry] });
  readonly #forced = new Counter({
    name: "plinth_child_forced_kills_total",
    help: "Plugin children that needed SIGKILL.",
    registers: [this.registry],
  });
  readonly #protocol = new Counter({
    name: "plinth_child_protocol_errors_total",
    help: "Plugin children stopped for breaking the pipe protocol.",
    registers: [this.registry],
  });
  readonly #instanceSends = new Counter({
    name: "plinth_instance_sends_total",
    help: "Calls on a model sent to a child: resident (it held the instance; no bytes sent) or not (with the instance's bytes).",
    labelNames: ["resident"],
    registers: [this.registry],
  });
  readonly #instanceBytes = new Counter({
    name: "plinth_instance_bytes_sent_total",
    help: "Bytes of serialized instances sent to children with calls.",
    registers: [this.registry],
  });
  readonly #batchSize = new Histogram({
    name: "plinth_batch_size",
    help: "Predicts in each batch that went to a child (model types with batched predicts).",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });
  readonly #batchWait = new Histogram({
    name: "plinth_batch_wait_seconds",
    help: "How long each batched predict waited for its batch to go, from joining it.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly #storeWrites = new Histogram({
    name: "plinth_store_commit_seconds",
    help: "One commit of action changes (all those of one event-loop turn).",
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5],
    registers: [this.registry],
  });

  constructor() {
    // Process metrics, event-loop lag included.
    collectDefaultMetrics({ register: this.registry });
    // Both kinds of send show from the start, at 0.
    for (const resident of ["true", "false"]) this.#instanceSends.inc({ resident }, 0);
  }

  readonly storeCommit = (seconds: number) => this.#storeWrites.observe(seconds);

  /** Follows the engine and the process manager; returns what stops following them. */
  observe(engine: Engine, processes: ProcessManager): () => void {
    // The failed attempts counted so far, by unfinished action.
    const retried = new Map<string, number>();
    const unsubscribe = engine.subscribe((event) => {
      if (event.kind !== "action_upserted") return;
      const a = event.action;
      const call = calls[a.call] ?? "unknown";
      for (const failed of a.attempts.slice(retried.get(a.id) ?? 0)) {
        this.#retries.inc({ call, model_type: a.modelType, code: failed.error?.code ?? "unknown" });
      }
      if (a.attempts.length) retried.set(a.id, a.attempts.length);
      if (!isEnded(a)) return;
      retried.delete(a.id);
      this.#actions.inc({ call, model_type: a.modelType, status: statuses[a.status] ?? "unknown" });
      const created = seconds(a.createTime);
      const ended = seconds(a.endTime);
      const started = seconds(a.startTime);
      if (created !== undefined && ended !== undefined) this.#duration.observe({ call, model_type: a.modelType }, Math.max(0, ended - created));
      if (created !== undefined && started !== undefined) this.#queueWait.observe({ call }, Math.max(0, started - created));
    });
    const onSpawn = () => this.#spawns.inc();
    const onExit = (_pid: number, exit: { forced: boolean; protocolError: boolean }) => {
      if (exit.forced) this.#forced.inc();
      if (exit.protocolError) this.#protocol.inc();
    };
    const onInstance = (resident: boolean, bytes: number) => {
      this.#instanceSends.inc({ resident: String(resident) });
      this.#instanceBytes.inc(bytes);
    };
    const onBatch = (size: number, waits: number[]) => {
      this.#batchSize.observe(size);
      for (const wait of waits) this.#batchWait.observe(wait);
    };
    engine.serving.on("batch", onBatch);
    processes.events.on("spawn", onSpawn);
    processes.events.on("exit", onExit);
    processes.events.on("instance", onInstance);
    new Gauge({
      name: "plinth_queue_depth",
      help: "Actions waiting for their model, a child or their data.",
      registers: [this.registry],
      collect() {
        this.set(engine.stats.waiting);
      },
    });
    new Gauge({
      name: "plinth_children",
      help: "Plugin children by state.",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const c = processes.counts();
        for (const state of ["live", "idle", "busy", "starting"] as const) this.set({ state }, c[state]);
      },
    });
    new Gauge({
      name: "plinth_resident_bytes",
      help: "Serialized size of the instances plugin children hold resident, by the server's books.",
      registers: [this.registry],
      collect() {
        this.set(processes.residentBytes());
      },
    });
    new Gauge({
      name: "plinth_watchers",
      help: "Open WatchState streams.",
      registers: [this.registry],
      collect() {
        this.set(engine.stats.watchers);
      },
    });
    return () => {
      unsubscribe();
      engine.serving.off("batch", onBatch);
      processes.events.off("spawn", onSpawn);
      processes.events.off("exit", onExit);
      processes.events.off("instance", onInstance);
    };
  }

  /** GET /metrics on `address`; resolves with the port and what closes it. */
  serve(address: string): Promise<{ port: number; close(): Promise<void> }> {
    const server: Server = createServer((request, response) => {
      if (request.method !== "GET" || request.url?.split("?")[0] !== "/metrics") {
        response.writeHead(404, { "content-type": "text/plain" }).end("not found: the metrics are at GET /metrics\n");
        return;
      }
      this.registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (error: Error) => response.writeHead(500, { "content-type": "text/plain" }).end(`${error.message}\n`),
      );
    });
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        const bound = server.address();
        resolve({
          port: typeof bound === "object" && bound ? bound.port : port,
          close: () => new Promise<void>((done) => server.close(() => done()).closeAllConnections()),
        });
      });
    });
  }
}
