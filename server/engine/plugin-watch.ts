/**
 * The dev loop: a watched plugin (plugins[].watch, or --watch) is loaded again when a
 * file in its module's folder changes. The new code is started in a child of its own
 * first; only once its manifest has come does it take the old one's place: new calls
 * get children of the new code, idle children of the old one stop, and calls running on
 * the old code finish there. Code that no longer loads is reported (log, ListPlugins'
 * reload_error) and the old version stays in force.
 */
import { EventEmitter } from "node:events";
import { type FSWatcher, watch } from "node:fs";
import { dirname, sep } from "node:path";
import type { Logger } from "pino";
import type { PluginConfig } from "../config/schema.ts";
import type { ProcessManager } from "../process/process-manager.ts";
import { loadPlugin } from "./load-plugins.ts";
import type { PluginRegistry } from "./plugins.ts";

/** Changes that come together (an editor's save is several events) are one reload. */
const SETTLE_MS = 150;

export interface ReloadEvents {
  /** A plugin's new code took its place: its config key and the new generation. */
  reloaded: [key: string, generation: number];
  /** A plugin's new code did not load; the old code keeps serving. */
  failed: [key: string, message: string];
}

export interface PluginWatcher {
  readonly events: EventEmitter<ReloadEvents>;
  close(): void;
}

/** Files a change to which is not a change of the plugin's code. */
function ignored(file: string | null): boolean {
  if (!file) return false;
  return file.split(sep).some((part) => part === "node_modules" || part.startsWith("."));
}

export function watchPlugins(
  configs: PluginConfig[],
  registry: PluginRegistry,
  processes: ProcessManager,
  base: string,
  logger: Logger,
): PluginWatcher {
  const events = new EventEmitter<ReloadEvents>();
  const watchers: FSWatcher[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let closed = false;

  configs.forEach((config, position) => {
    if (!config.watch) return;
    const key = `plugins[${position}]`;
    let running = false;
    let again = false;

    const reload = async (): Promise<void> => {
      const old = registry.plugins[position]!;
      const generation = (old.target.generation ?? 0) + 1;
      try {
        const fresh = await loadPlugin(config, position, processes, base, generation);
        if (closed) return processes.retireTarget(fresh.target);
        try {
          registry.replace(position, fresh);
        } catch (error) {
          processes.retireTarget(fresh.target);
          throw error;
        }
        processes.retireTarget(old.target);
        logger.info(
          {
            plugin: fresh.info.name,
            generation,
            models: fresh.info.modelTypes.map((m) => m.name),
            dataAccess: fresh.info.dataAccess.map((d) => d.name),
          },
          "plugin reloaded",
        );
        events.emit("reloaded", key, generation);
      } catch (error) {
        if (closed) return;
        const message = (error as Error).message;
        registry.reloadFailed(position, message);
        logger.error({ plugin: old.info.name, key }, `the plugin's changed code does not load; the previous version keeps serving: ${message}`);
        events.emit("failed", key, message);
      }
    };

    // One reload at a time per plugin; changes during one make one more after it.
    const schedule = () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      void reload().finally(() => {
        running = false;
        if (again && !closed) {
          again = false;
          schedule();
        }
      });
    };

    let timer: ReturnType<typeof setTimeout> | undefined;
    const changed = (_event: string, file: string | null) => {
      if (closed || ignored(file)) return;
      if (timer) {
        clearTimeout(timer);
        timers.delete(timer);
      }
      timer = setTimeout(() => {
        timers.delete(timer!);
        timer = undefined;
        schedule();
      }, SETTLE_MS);
      timers.add(timer);
    };
    const watcher = watch(dirname(config.module), { recursive: true }, changed);
    watcher.on("error", (error) => logger.warn({ err: error, key }, "watching the plugin's files failed; it is no longer reloaded"));
    watchers.push(watcher);
  });

  return {
    events,
    close() {
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
