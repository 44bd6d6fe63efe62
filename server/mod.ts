/**
 * Plinth's server as a library (`plinth/server` in package.json's exports): started in
 * this process from a config file or the embedded default, stopped in order. It sets no
 * signal handlers: the process that embeds it decides when it stops (`plinth serve` and
 * `npm start` stop on SIGTERM and SIGINT, serve.ts).
 *
 * @example
 * ```ts
 * import { start } from "plinth/server";
 *
 * const server = await start({ config: "plinth.yaml", address: "127.0.0.1:0" });
 * console.log(server.port); // the port it took
 * await server.stop();
 * ```
 * @module
 */
import { type Logger, pino } from "pino";
import { startServer } from "./app.ts";
import { loadConfig } from "./config/load.ts";

export interface StartOptions {
  /** A YAML config file (its relative paths are taken from its folder); without it, the embedded default. */
  config?: string | undefined;
  /** Overrides server.address; port 0 takes a free one (RunningServer.port says which). */
  address?: string | undefined;
  /** Overrides http.address (Connect and gRPC-Web); "off" for none. */
  httpAddress?: string | undefined;
  /** Reloads every plugin when its files change (plugins[].watch for all). */
  watch?: boolean | undefined;
  /** Where the server logs; default: JSON lines at "info" on stdout, as `plinth serve`. */
  logger?: Logger | undefined;
  /** Aborting it stops a server still starting (its plugins loading); start() then rejects. */
  signal?: AbortSignal | undefined;
}

export interface RunningServer {
  /** The gRPC port. */
  readonly port: number;
  /** The Connect and gRPC-Web port, when http.address is on. */
  readonly httpPort: number | undefined;
  /** Stops in order: new calls refused, actions ended, children reaped, the store and the ports closed. */
  stop(): Promise<void>;
}

/** Starts a server; rejects with the config key and what to fix when the config or a plugin is wrong. */
export async function start(options: StartOptions = {}): Promise<RunningServer> {
  const config = await loadConfig(options.config, { address: options.address, httpAddress: options.httpAddress, watch: options.watch });
  const server = await startServer(config, options.logger ?? pino(), options.signal);
  return { port: server.port, httpPort: server.httpPort, stop: () => server.close() };
}
