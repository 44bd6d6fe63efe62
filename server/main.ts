/**
 * `npm start` / `tsx server/main.ts [--config plinth.yaml] [--address host:port]`.
 * Runs until SIGTERM or SIGINT, then stops gracefully: no child left behind.
 */
import { parseArgs } from "node:util";
import { pino } from "pino";
import { loadConfig } from "./config/load.ts";
import { PlinthError } from "./errors.ts";
import { startServer } from "./app.ts";

const usage = `usage: tsx server/main.ts [--config FILE] [--address HOST:PORT] [--log-level LEVEL]

  --config FILE        YAML config; without it, the embedded default (example plugins,
                       in-memory state, 127.0.0.1:50051)
  --address HOST:PORT  overrides server.address (port 0 picks a free port)
  --log-level LEVEL    trace, debug, info (default), warn, error`;

async function main(): Promise<number> {
  let values: { config?: string | undefined; address?: string | undefined; "log-level": string; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: "string" },
        address: { type: "string" },
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
  const logger = pino({ level: values["log-level"] });
  try {
    const config = await loadConfig(values.config);
    if (values.address) config.server.address = values.address;
    const server = await startServer(config, logger);
    // The first signal stops gracefully; a second one while stopping exits at once.
    const stop = await new Promise<NodeJS.Signals>((resolve) => {
      process.once("SIGTERM", resolve);
      process.once("SIGINT", resolve);
    });
    logger.info({ signal: stop }, "stopping");
    process.once("SIGTERM", () => process.exit(1));
    process.once("SIGINT", () => process.exit(1));
    await server.close();
    return 0;
  } catch (error) {
    if (PlinthError.is(error)) logger.error(error.message);
    else logger.error({ err: error }, "failed to start");
    return 1;
  }
}

process.exitCode = await main();
