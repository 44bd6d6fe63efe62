/**
 * The command line built to one JavaScript module, as the package builds it (esbuild, the
 * packages left as imports): a test that runs it dozens of times pays no TypeScript
 * loader per run. Built from the sources now, so never stale; in a folder under
 * node_modules/.cache (its imports resolve from there), removed after the test file.
 */
import { join } from "node:path";
import { build } from "esbuild";
import { root } from "./server.ts";
import { tempDir } from "./temp.ts";

export async function builtCli(): Promise<string> {
  const dir = tempDir("cli-", join(root, "node_modules/.cache/plinth"));
  const outfile = join(dir, "main.mjs");
  await build({
    entryPoints: [join(root, "cli/main.ts")],
    outfile,
    bundle: true,
    packages: "external",
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
  });
  return outfile;
}
