/**
 * The server's command line: parse the options, start, stop in order on SIGTERM/SIGINT.
 * `server/main.ts` (what `npm start` runs) and `plinth serve` both run it.
 *
 * Signals come more than once: Ctrl-C reaches the whole process group and npm forwards
 * it again, a supervisor may repeat SIGTERM. The same signal within a second counts
 * once; a later one hurries the stop (children get SIGKILL now instead of SIGTERM and
 * sigterm_timeout), which still ends every action and closes the store. Nothing exits
 * without killing every child first.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { type PlinthServer, startServer } from "./app.ts";
import { loadConfig } from "./config/load.ts";
import { PlinthError } from "./errors.ts";

const usage = `usage: node --import tsx server/main.ts [--config FILE] [--address HOST:PORT] [--http-address HOST:PORT] [--watch] [--log-level LEVEL]

  --config FILE        YAML config; without it, ./plinth.yaml when there is one, else the
                       embedded default (example plugins, models and history in
                       ./data/plinth.db, 127.0.0.1:50051)
  --address HOST:PORT  overrides server.address (port 0 picks a free port)
  --http-address HOST:PORT  overrides http.address: Connect and gRPC-Web (curl, browsers); "off" for none
  --watch              reload every plugin when its files change (plugins[].watch for all)
  --log-level LEVEL    trace, debug, info (default), warn, error, fatal, silent`;

/** The config `serve` reads from the working folder when no --config names one. */
const PROJECT_CONFIG = "plinth.yaml";

/** pino's levels; another would throw when the logger is made. */
const levels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

/** The same signal again within this long is the same request (group delivery + npm's relay). */
const SAME_SIGNAL_MS = 1000;

/**
 * Log lines (an audit line for every call that changes something) leave in writes of
 * 4 KiB, or at the next LOG_FLUSH_MS tick: at a thousand calls a second one write each
 * was ~5 % of the server's time. Exit writes what waits; SIGKILL loses it.
 */
const LOG_FLUSH_MS = 100;

/** Runs the server with these command-line arguments until it is stopped; resolves with the exit code. */
export async function serve(args: string[]): Promise<number> {
  let values: {
    config?: string | undefined;
    address?: string | undefined;
    "http-address"?: string | undefined;
    watch?: boolean | undefined;
    "log-level": string;
    help?: boolean | undefined;
  };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: "string" },
        address: { type: "string" },
        "http-address": { type: "string" },
        watch: { type: "boolean" },
        "log-level": { type: "string", default: process.env.PLINTH_LOG_LEVEL ?? "info" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!levels.includes(values["log-level"])) {
    console.error(`--log-level: must be one of ${levels.join(", ")}, got ${JSON.stringify(values["log-level"])}\n\n${usage}`);
    return 2;
  }
  const logger = pino({ level: values["log-level"] }, pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: LOG_FLUSH_MS }));
  let server: PlinthServer | undefined;
  // A fault of our own must not leave children behind either.
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "uncaught exception; killing plugin children and exiting");
    server?.kill();
    process.exit(70);
  });
  const signals: NodeJS.Signals[] = ["SIGTERM", "SIGINT"];
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  const stop = new AbortController();
  const stopRequested = new Promise<void>((resolve) => stop.signal.addEventListener("abort", () => resolve(), { once: true }));
  const onSignal = (signal: NodeJS.Signals) => {
    if (!first) {
      first = { signal, at: performance.now() };
      logger.info({ signal }, "stopping");
      stop.abort(new PlinthError("shutting_down", `stopped by ${signal} while starting`));
    } else if (signal !== first.signal || performance.now() - first.at > SAME_SIGNAL_MS) {
      logger.warn({ signal }, "stopping now: plugin children get SIGKILL");
      server?.kill();
    }
  };
  for (const signal of signals) process.on(signal, onSignal);
  // SIGHUP: read the TLS certificate files again, without closing the port.
  process.on("SIGHUP", () => {
    server?.reloadTls().then(
      (reloaded) => logger.info(reloaded ? "TLS files read again" : "SIGHUP: nothing to read again (no server.tls)"),
      (error: unknown) => logger.error({ err: error }, "reading the TLS files again failed; the previous ones stay in use"),
    );
  });
  try {
    // A project's plinth.yaml (what `plinth init` writes) is its config when none is named.
    const file = values.config ?? (existsSync(PROJECT_CONFIG) ? PROJECT_CONFIG : undefined);
    if (file !== undefined && values.config === undefined) logger.info({ config: resolve(file) }, "config: plinth.yaml of the working folder");
    const config = await loadConfig(file, { address: values.address, httpAddress: values["http-address"], watch: values.watch });
    server = await startServer(config, logger, stop.signal);
    const failure = await Promise.race([stopRequested.then(() => undefined), server.failed]);
    await server.close();
    return failure === undefined ? 0 : 1;
  } catch (error) {
    if (stop.signal.aborted) return 0; // stopped while starting: what had started is stopped again
    // On a terminal, a line to read (and the stack of a fault of ours); else the JSON log line.
    if (process.stdout.isTTY) {
      logger.flush();
      process.stderr.write(PlinthError.is(error) ? `plinth: ${error.message}\n` : `plinth: failed to start: ${(error as Error).stack ?? error}\n`);
    } else if (PlinthError.is(error)) logger.error(error.message);
    else logger.error({ err: error }, "failed to start");
    return 1;
  }
}
