/**
 * The loaded plugins: each module is started once at boot to read its manifest;
 * model types and data-access names then map to the module that serves them.
 */
import { create } from "@bufbuild/protobuf";
import type { RetryPolicy } from "../../gen/plinth/v1/action_pb.ts";
import { type Plugin, PluginSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { CallKind } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError } from "../errors.ts";
import type { PluginTarget } from "../process/runtimes.ts";
import { type CallCheck, compileCall } from "./arg-schemas.ts";
import type { BatchPolicy } from "./predict-batches.ts";

/** The manifest's names of the calls that may declare schemas. */
const callKinds: Record<string, CallKind> = {
  instantiate: CallKind.INSTANTIATE,
  fit: CallKind.FIT,
  predict: CallKind.PREDICT,
  data_access: CallKind.DATA_ACCESS,
};

export interface LoadedPlugin {
  /** The config key it came from, for messages: "plugins[0]". */
  key: string;
  target: PluginTarget;
  info: Plugin;
  /** Its model types' retry policies by call (plugins[].retry). */
  retry?: Partial<Record<CallKind, RetryPolicy>> | undefined;
}

/** What the registry looks up, built from one list of plugins at once. */
interface Index {
  plugins: readonly LoadedPlugin[];
  modelTypes: Map<string, LoadedPlugin>;
  dataAccess: Map<string, LoadedPlugin>;
  /** Each declared call's compiled schemas, by function name and call kind. */
  checks: Map<string, CallCheck>;
}

/** Indexes the plugins; throws, naming the config key, when two declare one name or a schema does not compile. */
function index(plugins: readonly LoadedPlugin[]): Index {
  const built: Index = { plugins, modelTypes: new Map(), dataAccess: new Map(), checks: new Map() };
  const names = new Map<string, LoadedPlugin>();
  const claim = (map: Map<string, LoadedPlugin>, name: string, what: string, plugin: LoadedPlugin) => {
    const other = map.get(name);
    if (other) {
      throw new PlinthError(
        "invalid_argument",
        `config ${plugin.key}: ${what} "${name}" of ${plugin.target.module} is already declared by ${other.key} (${other.target.module})`,
      );
    }
    map.set(name, plugin);
  };
  for (const plugin of plugins) {
    claim(names, plugin.info.name, "plugin name", plugin);
    for (const f of plugin.info.modelTypes) claim(built.modelTypes, f.name, "model type", plugin);
    for (const f of plugin.info.dataAccess) claim(built.dataAccess, f.name, "data-access function", plugin);
    for (const f of [...plugin.info.modelTypes, ...plugin.info.dataAccess]) {
      for (const s of f.schemas) {
        const kind = callKinds[s.call];
        if (kind === undefined) continue; // a call this server does not know: nothing to check
        try {
          built.checks.set(`${f.name}\0${kind}`, compileCall(s, f.name));
        } catch (error) {
          throw new PlinthError("invalid_argument", `config ${plugin.key}.module: ${(error as Error).message}`);
        }
      }
    }
  }
  return built;
}

export class PluginRegistry {
  #index: Index;

  constructor(plugins: LoadedPlugin[]) {
    this.#index = index(plugins);
  }

  get plugins(): readonly LoadedPlugin[] {
    return this.#index.plugins;
  }

  /**
   * Puts a reloaded plugin in place of the one at `position`, its manifest and schemas
   * with it; throws (and changes nothing) when it clashes with another plugin.
   */
  replace(position: number, plugin: LoadedPlugin): void {
    const plugins = [...this.#index.plugins];
    plugins[position] = plugin;
    this.#index = index(plugins);
  }

  /** Records why the plugin's changed code did not load (ListPlugins shows it). */
  reloadFailed(position: number, message: string): void {
    const old = this.#index.plugins[position]!;
    const plugins = [...this.#index.plugins];
    plugins[position] = { ...old, info: create(PluginSchema, { ...old.info, reloadError: message }) };
    this.#index = { ...this.#index, plugins };
    // The lookups keep pointing at the same plugin: only its info changed.
    for (const map of [this.#index.modelTypes, this.#index.dataAccess]) {
      for (const [name, p] of map) if (p === old) map.set(name, plugins[position]!);
    }
  }

  /** The compiled schemas of `name`'s call of this kind, if it declared any. */
  check(name: string, kind: CallKind): CallCheck | undefined {
    return this.#index.checks.get(`${name}\0${kind}`);
  }

  modelType(name: string): LoadedPlugin | undefined {
    return this.#index.modelTypes.get(name);
  }

  dataAccess(name: string): LoadedPlugin | undefined {
    return this.#index.dataAccess.get(name);
  }

  /**
   * How many predicts on one model of this type may run at once: its declared
   * max_replicas when its predict is concurrent; undefined when not (one call at a time).
   */
  concurrentPredicts(modelType: string): number | undefined {
    const serving = this.#serving(modelType);
    return serving?.concurrent ? Math.max(1, serving.maxReplicas) : undefined;
  }

  /** How predicts of this model type are batched, when it declared batched predicts. */
  batching(modelType: string): BatchPolicy | undefined {
    const serving = this.#serving(modelType);
    if (!serving?.batchMaxSize) return undefined;
    return { maxSize: serving.batchMaxSize, maxWaitMs: serving.batchMaxWaitMs, maxReplicas: Math.max(1, serving.maxReplicas) };
  }

  /** The retry policy its plugin's config gives a call of this model type, if any. */
  retry(modelType: string, kind: CallKind): RetryPolicy | undefined {
    return this.modelType(modelType)?.retry?.[kind];
  }

  #serving(modelType: string) {
    return this.modelType(modelType)?.info.modelTypes.find((f) => f.name === modelType)?.serving;
  }

  modelTypeNames(): string[] {
    return [...this.#index.modelTypes.keys()];
  }

  dataAccessNames(): string[] {
    return [...this.#index.dataAccess.keys()];
  }

  list(): Plugin[] {
    return this.plugins.map((p) => create(PluginSchema, p.info));
  }
}
