/**
 * The loaded plugins: each module is started once at boot to read its manifest;
 * model types and data-access names then map to the module that serves them.
 */
import { create } from "@bufbuild/protobuf";
import { type Plugin, PluginSchema } from "../../gen/plinth/v1/engine_service_pb.ts";
import { PlinthError } from "../errors.ts";
import type { PluginTarget } from "../process/runtimes.ts";

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
    }
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
