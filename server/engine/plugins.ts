/**
 * The loaded plugins: each module is started once at boot to read its manifest;
 * model types and data-access names then map to the module that serves them.
 */
import { create } from "@bufbuild/protobuf";
import { type Plugin, PluginSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { CallKind } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { PlinthError } from "../errors.ts";
import type { PluginTarget } from "../process/runtimes.ts";
import { type CallCheck, compileCall } from "./arg-schemas.ts";

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
}

export class PluginRegistry {
  readonly plugins: readonly LoadedPlugin[];
  readonly #modelTypes = new Map<string, LoadedPlugin>();
  readonly #dataAccess = new Map<string, LoadedPlugin>();
  /** Each declared call's compiled schemas, by function name and call kind. */
  readonly #checks = new Map<string, CallCheck>();

  constructor(plugins: LoadedPlugin[]) {
    this.plugins = plugins;
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
      for (const f of plugin.info.modelTypes) claim(this.#modelTypes, f.name, "model type", plugin);
      for (const f of plugin.info.dataAccess) claim(this.#dataAccess, f.name, "data-access function", plugin);
      for (const f of [...plugin.info.modelTypes, ...plugin.info.dataAccess]) {
        for (const s of f.schemas) {
          const kind = callKinds[s.call];
          if (kind === undefined) continue; // a call this server does not know: nothing to check
          try {
            this.#checks.set(`${f.name}\0${kind}`, compileCall(s, `${f.name}'s ${s.call}`));
          } catch (error) {
            throw new PlinthError("invalid_argument", `config ${plugin.key}.module: ${(error as Error).message}`);
          }
        }
      }
    }
  }

  /** The compiled schemas of `name`'s call of this kind, if it declared any. */
  check(name: string, kind: CallKind): CallCheck | undefined {
    return this.#checks.get(`${name}\0${kind}`);
  }

  modelType(name: string): LoadedPlugin | undefined {
    return this.#modelTypes.get(name);
  }

  dataAccess(name: string): LoadedPlugin | undefined {
    return this.#dataAccess.get(name);
  }

  modelTypeNames(): string[] {
    return [...this.#modelTypes.keys()];
  }

  list(): Plugin[] {
    return this.plugins.map((p) => create(PluginSchema, p.info));
  }
}
