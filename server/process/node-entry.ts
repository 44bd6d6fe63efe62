/**
 * The Node child's code (sdk/adapters/node.ts: the pipe, the frames; node-thread.ts: the
 * plugin's thread) and the SDK as plain JavaScript, built when the server starts: a child
 * then runs without tsx. tsx's loader is a thread and a heap of its own in every thread
 * that registers it (~35 MiB of a child's RSS), it compiles each file again in every
 * child, and the more a child holds the longer the kernel takes to tear it down when it
 * is killed. The plugin itself is built too (plugin-bundle.ts), against this build's SDK.
 */
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { build } from "esbuild";
import type { Logger } from "pino";
import { BUILT, PLINTH_DIR } from "../package-root.ts";
import { withEsbuild } from "./esbuild.ts";

/** What the server built: the child's entry, and the SDK's modules a plugin shares with the plugin thread. */
export interface NodeBuild {
  /** The child's entry (its plugin thread is node-thread.mjs beside it). */
  entry: string;
  /** Each public SDK module's source path → its built file: a plugin's import of one is pointed there. */
  sdk: ReadonlyMap<string, string>;
}

/** Where the server keeps what it builds: in the checkout, so servers of one share it. */
const CACHE_DIR = join(PLINTH_DIR, "node_modules/.cache/plinth");

/**
 * The build's own child (dist/sdk/adapters/node.mjs, made by `npm run build` in the same
 * split build as dist/sdk/*.mjs): nothing to build at start. A plugin's import of the
 * SDK's source (the examples' ../../sdk/mod.ts) goes to the built module, and one of
 * `plinth/sdk` resolves to the built module itself: either way the thread's instance.
 * Nothing is written: an installed package may be read-only.
 */
function prebuilt(): NodeBuild {
  const dist = join(PLINTH_DIR, "dist");
  return { entry: join(dist, "sdk/adapters/node.mjs"), sdk: builtSdk(sdkEntries(), dist) };
}

/** Each SDK module's source → its built file in `dir`, where a build named it as sdkEntries() does. */
function builtSdk(entries: Record<string, string>, dir: string): Map<string, string> {
  return new Map(Object.entries(entries).map(([name, source]) => [source, join(dir, `${name}.mjs`)]));
}

/** The SDK modules a plugin may import (sdk/*.ts but the private `_` ones), by their names in the build. */
function sdkEntries(): Record<string, string> {
  const dir = join(PLINTH_DIR, "sdk");
  const names = readdirSync(dir).filter((name) => name.endsWith(".ts") && !name.startsWith("_"));
  return Object.fromEntries(names.map((name) => [`sdk/${name.slice(0, -3)}`, join(dir, name)]));
}

/**
 * Builds into node_modules/.cache/plinth/node-child-<hash> (named by its content, so a
 * changed SDK gets a folder of its own); undefined when it could not be built or
 * written: children then start through tsx.
 */
export async function buildNodeEntry(logger: Logger): Promise<NodeBuild | undefined> {
  if (BUILT) return prebuilt();
  const sdk = sdkEntries();
  try {
    // One build with shared chunks: the plugin thread and a plugin importing sdk/mod.mjs
    // get the same module instances (a Tensor made by the plugin is one the thread knows).
    const { outputFiles } = await withEsbuild(() =>
      build({
        entryPoints: {
          node: join(PLINTH_DIR, "sdk/adapters/node.ts"),
          "node-thread": join(PLINTH_DIR, "sdk/adapters/node-thread.ts"),
          ...sdk,
        },
        bundle: true,
        splitting: true,
        write: false,
        outdir: "/",
        outExtension: { ".js": ".mjs" },
        platform: "node",
        format: "esm",
        target: "node20",
        logLevel: "silent",
      }),
    );
    const hash = createHash("sha256");
    for (const file of outputFiles) hash.update(file.path).update(file.contents);
    const dir = join(CACHE_DIR, `node-child-${hash.digest("hex").slice(0, 16)}`);
    // Whole or not at all, for another server starting at the same time: written aside,
    // then renamed into place (which fails harmlessly when another got there first).
    const partial = `${dir}.${randomUUID()}`;
    if (!existsSync(dir))
      try {
        for (const file of outputFiles) {
          const path = join(partial, file.path);
          mkdirSync(dirname(path), { recursive: true });
          writeFileSync(path, file.contents);
        }
        renameSync(partial, dir);
      } catch (error) {
        rmSync(partial, { recursive: true, force: true });
        // Another server put the same build in place first.
        if (!existsSync(dir)) throw error;
      }
    return { entry: join(dir, "node.mjs"), sdk: builtSdk(sdk, dir) };
  } catch (error) {
    logger.warn({ err: error }, "could not build the Node children's code: they load it through tsx");
    return undefined;
  }
}
