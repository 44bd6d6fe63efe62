/**
 * The engine as the server composes it (openEngine), in one test process and without
 * children: a store the test gives (memory, or a fake cluster's), fake plugin calls, and
 * vitest's fake clock. settle() lets every step the code can take without the clock run.
 */
import { setImmediate as realSetImmediate } from "node:timers";
import { create, type JsonValue } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { type Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import type { Cluster } from "../../server/cluster/types.ts";
import { parseConfig } from "../../server/config/load.ts";
import type { ActionRequest, Engine } from "../../server/engine/engine.ts";
import type { PluginRegistry } from "../../server/engine/plugins.ts";
import { openEngine } from "../../server/open-engine.ts";
import { MemoryStore } from "../../server/store/memory.ts";
import type { Store } from "../../server/store/store.ts";
import { json } from "./args.ts";
import type { FakePluginCalls } from "./fake-plugins.ts";

export const silent = pino({ level: process.env.PLINTH_TEST_LOG ?? "silent" });

/**
 * Runs everything that is ready to run: the microtasks of the memory stores, fakes and
 * engine, turn after turn, up to what waits for the clock. node:timers' setImmediate is
 * not the one vitest's fake timers replace.
 */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => realSetImmediate(resolve));
}

export function memoryStore(): MemoryStore {
  return new MemoryStore({ keepRevisions: 5, maxActions: 100_000, maxActionAgeMs: 30 * 24 * 3600_000 });
}

/** The engine section of the config, as a config file gives it (engine.max_children, …). */
export type EngineConfig = Record<string, unknown>;

/** An engine over `store` (a LocalRunner; a ClusterRunner with a `cluster`) calling plugins through `processes`. */
export function openFastEngine(parts: {
  store: Store;
  cluster?: Cluster;
  processes: FakePluginCalls;
  plugins: PluginRegistry;
  engine?: EngineConfig;
  /** The backend section's other keys (backend.claim_affinity_ms, …). */
  backend?: Record<string, unknown>;
  /** The server section (server.auth.visibility, …). */
  server?: Record<string, unknown>;
}): Promise<Engine> {
  const config = parseConfig(
    { plugins: [], backend: { ...parts.backend, kind: "memory" }, engine: parts.engine ?? {}, ...(parts.server ? { server: parts.server } : {}) },
    process.cwd(),
  );
  return openEngine(config, { store: parts.store, cluster: parts.cluster, processes: parts.processes, plugins: parts.plugins, logger: silent });
}

/** A promise and whether it has settled yet: to see that something has not happened (after settle()). */
export interface Tracked<T> {
  readonly promise: Promise<T>;
  readonly done: boolean;
  readonly value: T | undefined;
  readonly error: unknown;
}

export function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked = { promise, done: false, value: undefined as T | undefined, error: undefined as unknown };
  promise.then(
    (value) => Object.assign(tracked, { done: true, value }),
    (error: unknown) => Object.assign(tracked, { done: true, error }),
  );
  return tracked;
}

/** A request's JSON argument, as the engine takes it. */
export function jsonArg(value: JsonValue): Arg {
  return create(ArgSchema, json(value));
}

/** A request with these JSON arguments and, if given, a timeout in ms. */
export function request(args: JsonValue[] = [], timeoutMs?: number): ActionRequest {
  return { args: args.map(jsonArg), kwargs: {}, ...(timeoutMs === undefined ? {} : { timeout: durationFromMs(timeoutMs) }) };
}
