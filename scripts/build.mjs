// `npm run build` (and `prepare`, so `npm pack` too): the package's JavaScript in dist/ with
// esbuild, one build split into shared chunks, so that the SDK a plugin imports
// (plinth/sdk → dist/sdk/mod.mjs) is the very module the plugin thread runs
// (dist/sdk/adapters/node-thread.mjs); packages stay imports of node_modules. Then the
// declarations of the public entries with tsc (tsconfig.build.json) in dist/types.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { build } from "esbuild";
import { STAMP, sourcesHash } from "./build-sources.mjs";

const started = performance.now();
// Read before building: a source changed during the build leaves a stamp that does not match.
const sources = sourcesHash();
rmSync(STAMP, { force: true });
rmSync("dist", { recursive: true, force: true });
const sdk = readdirSync("sdk").filter((name) => name.endsWith(".ts") && !name.startsWith("_"));
await build({
  entryPoints: {
    "cli/main": "cli/main.ts",
    "server/main": "server/main.ts",
    "server/mod": "server/mod.ts",
    "client/mod": "client/mod.ts",
    "sdk/adapters/node": "sdk/adapters/node.ts",
    "sdk/adapters/node-thread": "sdk/adapters/node-thread.ts",
    "sdk/adapters/deno": "sdk/adapters/deno.ts",
    "sdk/adapters/deno-thread": "sdk/adapters/deno-thread.ts",
    ...Object.fromEntries(sdk.map((name) => [`sdk/${name.slice(0, -3)}`, `sdk/${name}`])),
  },
  outdir: "dist",
  outExtension: { ".js": ".mjs" },
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  splitting: true,
  packages: "external",
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: "linked",
  logLevel: "warning",
});
// The built child's thread for a plugin loading through tsx, and the hook that gives the plugin's files their format.
for (const name of ["node-thread-tsx.mjs", "node-format.mjs"]) copyFileSync(join("sdk/adapters", name), join("dist/sdk/adapters", name));
const js = performance.now();
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
// tsc keeps the sources' relative "./x.ts" imports in the declarations; tsc finds
// x.d.ts for them, Deno does not: both read "./x.d.ts". Comment lines are left as written.
const relativeTs = /(\bfrom\s*"|\bimport\(\s*")(\.{1,2}\/[^"]*)\.ts"/g;
for (const entry of readdirSync("dist/types", { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith(".d.ts")) continue;
  const file = join(entry.parentPath, entry.name);
  const lines = readFileSync(file, "utf8").split("\n");
  const fixed = lines.map((line) => (/^\s*(\*|\/\/)/.test(line) ? line : line.replace(relativeTs, '$1$2.d.ts"')));
  writeFileSync(file, fixed.join("\n"));
}
mkdirSync(dirname(STAMP), { recursive: true });
writeFileSync(STAMP, sources);
console.log(`dist/: JavaScript ${Math.round(js - started)} ms, declarations ${Math.round(performance.now() - js)} ms`);
