/**
 * The Node child's own thread (sdk/adapters/node.ts: the pipe, the frames, the plugin
 * thread's start) as one plain JavaScript file, built when the server starts: the child
 * then runs without tsx on that thread. tsx's loader is a thread and a heap of its own
 * in every child (~25 MiB of its RSS), and the more a child holds the longer the kernel
 * takes to tear it down when it is killed. The plugin thread still loads TypeScript
 * through tsx (sdk/adapters/node-thread.mjs).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { build, stop } from "esbuild";
import type { Logger } from "pino";
import { PLINTH_DIR } from "./runtimes.ts";

const entry = join(PLINTH_DIR, "sdk/adapters/node.ts");
/** Spelt apart: the tests' bundle of the server rewrites that expression wherever it is written out. */
const IMPORT_META_URL = ["import", "meta", "url"].join(".");

/**
 * Builds the entry into node_modules/.cache/plinth (named by its content, so servers of
 * one checkout share it and a changed SDK gets a file of its own); its path, or
 * undefined when it could not be built or written: children then start through tsx.
 */
export async function buildNodeEntry(logger: Logger): Promise<string | undefined> {
  try {
    const { outputFiles } = await build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      platform: "node",
      format: "esm",
      target: "node20",
      logLevel: "silent",
      // The entry finds the plugin thread's file next to itself, where it is in the SDK.
      define: { [IMPORT_META_URL]: JSON.stringify(pathToFileURL(entry).href) },
    });
    const code = outputFiles[0]!.contents;
    const dir = join(PLINTH_DIR, "node_modules/.cache/plinth");
    const file = join(dir, `node-child-${createHash("sha256").update(code).digest("hex").slice(0, 16)}.mjs`);
    if (!existsSync(file)) {
      mkdirSync(dir, { recursive: true });
      // Whole or not at all, for another server starting at the same time.
      const partial = `${file}.${process.pid}`;
      writeFileSync(partial, code);
      renameSync(partial, file);
    }
    return file;
  } catch (error) {
    logger.warn({ err: error }, "could not build the Node children's entry: they load it through tsx");
    return undefined;
  } finally {
    // esbuild's service process would otherwise stay beside the server (its synchronous
    // API, which tsx uses, keeps one of its own in a thread: that one is not stopped).
    await stop();
  }
}
