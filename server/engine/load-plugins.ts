/** Starts configured plugin modules to read their manifests. */
import { existsSync } from "node:fs";
import { relative } from "node:path";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { RetryPolicy } from "../../gen/plinth/v1/action_pb.ts";
import { PluginSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { CallKind, type Function as ManifestFunction } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { type PluginConfig, residentMb } from "../config/schema.ts";
import { PlinthError } from "../errors.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import { CALL_NAMES, type CallName, type PluginTarget } from "../process/runtimes.ts";
import { type LoadedPlugin, PluginRegistry } from "./plugins.ts";
import { retryPolicyOf } from "./retry-policy.ts";

/** How clients see a module path: relative to the config's folder, not the host's absolute one. */
export function displayPath(base: string, module: string): string {
  const path = relative(base, module);
  return path.startsWith("..") ? module : path;
}

/**
 * Starts one configured plugin module to read its manifest. `generation` counts its
 * reloads: children of one generation serve only calls of that generation.
 */
export async function loadPlugin(
  config: PluginConfig,
  index: number,
  processes: ProcessManager,
  base: string,
  generation = 0,
  signal?: AbortSignal,
): Promise<LoadedPlugin> {
  const key = `plugins[${index}]`;
  if (!existsSync(config.module)) {
    throw new PlinthError("invalid_argument", `config ${key}.module: no such file ${config.module}`);
  }
  const display = displayPath(base, config.module);
  const target: PluginTarget = {
    module: config.module,
    runtime: config.runtime,
    ...(config.permissions ? { permissions: config.permissions } : {}),
    ...(config.max_memory_mb ? { maxMemoryMb: config.max_memory_mb } : {}),
    residentMb: residentMb(config),
    ...(config.env ? { env: config.env } : {}),
    ...(config.heartbeat_timeout !== undefined ? { heartbeatMs: heartbeatMs(config.heartbeat_timeout) } : {}),
    label: display,
    generation,
    key,
  };
  const retry = config.retry && retryByCall(config.retry);
  try {
    const hello = await processes.describe(target, signal);
    const manifest = hello.manifest;
    return {
      key,
      target,
      ...(retry ? { retry } : {}),
      info: create(PluginSchema, {
        name: manifest?.name ?? "",
        module: display,
        runtime: config.runtime,
        description: manifest?.description ?? "",
        modelTypes: (manifest?.modelTypes ?? []).map((f) => ({
          ...pluginFunction(f, key),
          serving: serving(f, key, Math.min(config.max_replicas ?? processes.maxChildren, processes.maxChildren)),
        })),
        dataAccess: (manifest?.dataAccess ?? []).map((f) => pluginFunction(f, key)),
        watched: config.watch,
        loadedTime: timestampNow(),
      }),
    };
  } catch (error) {
    const tail = (error as { logTail?: string[] }).logTail?.slice(-5).join("\n") ?? "";
    throw new PlinthError("invalid_argument", `config ${key}.module: ${(error as Error).message}${tail ? `\n${tail}` : ""}`, { cause: error });
  }
}

/** Starts every configured plugin module once to read its manifest; `base`: the config's folder. */
export async function loadPlugins(configs: PluginConfig[], processes: ProcessManager, base: string, signal?: AbortSignal): Promise<PluginRegistry> {
  const loaded = await Promise.all(configs.map((config, i) => loadPlugin(config, i, processes, base, 0, signal)));
  return new PluginRegistry(loaded);
}

/** The most predicts one batch may hold, and the longest a batch may wait for them (an hour). */
const MAX_BATCH_SIZE = 65_536;
const MAX_BATCH_WAIT_MS = 3_600_000;

/**
 * How a model type's predicts are served, as its manifest declares it: checked again
 * here, since the SDK refuses what is out of range but a child may send anything.
 */
function serving(f: ManifestFunction, key: string, maxReplicas: number) {
  const size = f.serving?.batchMaxSize ?? 0;
  const wait = f.serving?.batchMaxWaitMs ?? 0;
  if (size > MAX_BATCH_SIZE || !(wait >= 0 && wait <= MAX_BATCH_WAIT_MS)) {
    throw new PlinthError(
      "invalid_argument",
      `config ${key}.module: model type ${f.name} declares predict.batch with maxSize ${size} and maxWaitMs ${wait}: maxSize may be at most ${MAX_BATCH_SIZE}, maxWaitMs from 0 to ${MAX_BATCH_WAIT_MS}`,
    );
  }
  // Batched predicts run at once by nature: batched implies concurrent.
  const batch = size > 0 ? { batchMaxSize: size, batchMaxWaitMs: wait } : {};
  return { concurrent: (f.serving?.concurrent ?? false) || size > 0, maxReplicas, ...batch };
}

/** A declared function as clients see it: its schemas as JSON objects (a malformed one is the plugin's error, at start). */
function pluginFunction(f: ManifestFunction, key: string) {
  const struct = (text: string, what: string) => {
    if (!text) return undefined;
    try {
      const schema = JSON.parse(text) as JsonObject;
      if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw new TypeError("not an object");
      return schema;
    } catch (error) {
      throw new PlinthError(
        "invalid_argument",
        `config ${key}.module: ${f.name}'s ${what} schema is not a JSON Schema object: ${(error as Error).message}`,
      );
    }
  };
  return {
    name: f.name,
    description: f.description,
    schemas: f.signatures.map((s) => {
      const [args, kwargs, state] = [
        struct(s.argsSchema, `${s.call} args`),
        struct(s.kwargsSchema, `${s.call} kwargs`),
        struct(s.stateSchema, `${s.call} state`),
      ];
      return { call: s.call, ...(args ? { args } : {}), ...(kwargs ? { kwargs } : {}), ...(state ? { state } : {}) };
    }),
  };
}

/** plugins[].retry by call kind: one policy for each, or each named one. */
function retryByCall(retry: NonNullable<PluginConfig["retry"]>): Partial<Record<CallKind, RetryPolicy>> {
  const kinds = { instantiate: CallKind.INSTANTIATE, fit: CallKind.FIT, predict: CallKind.PREDICT };
  const named = "max_attempts" in retry ? { instantiate: retry, fit: retry, predict: retry } : retry;
  const byKind: Partial<Record<CallKind, RetryPolicy>> = {};
  for (const [name, policy] of Object.entries(named)) if (policy) byKind[kinds[name as keyof typeof kinds]] = retryPolicyOf(policy);
  return byKind;
}

/** plugins[].heartbeat_timeout in ms by call kind: one value for all, or each named one. */
function heartbeatMs(timeout: number | { [kind in CallName]?: number | undefined }): Partial<Record<CallName, number>> {
  const seconds = typeof timeout === "number" ? Object.fromEntries(CALL_NAMES.map((k) => [k, timeout])) : timeout;
  const named = Object.entries(seconds).filter((entry): entry is [string, number] => entry[1] !== undefined);
  return Object.fromEntries(named.map(([k, s]) => [k, s * 1000]));
}
