/**
 * A Node plugin built to one ES module, so that its thread loads it with no TypeScript
 * loader (node-entry.ts says why). Built once per plugin load (and per reload), in the
 * server, into a folder of the server's own (plugin-bundles.ts), named by its content.
 *
 * The bundle behaves as the plugin's files do where they are:
 * - its imports of the SDK go to the build's SDK, the plugin thread's own modules;
 * - packages in node_modules (JavaScript) are left to Node, imported by the absolute path
 *   they resolve to from the plugin's folder, so the plugin's own node_modules serve; the
 *   files of a plugin that is itself a package are built in;
 * - each file keeps its own `import.meta` (`url`, `dirname`, `filename`) and
 *   `__dirname`/`__filename`: a plugin finds its data files beside it;
 * - a CommonJS file's `require()` works (of a built-in, a package or the SDK);
 * - a stack trace names the plugin's files and lines (an inline source map).
 * What a bundle cannot do as the files would (an `import()` of a computed name,
 * `import.meta.resolve`), or a module with no default export, is not built: the plugin
 * then loads through tsx as before, with that loader's messages.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import { dirname, extname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { init as initLexer, parse as parseModule } from "es-module-lexer";
import { build, type Loader, type Plugin } from "esbuild";
import { PLINTH_DIR } from "../package-root.ts";
import { withEsbuild } from "./esbuild.ts";
import type { NodeBuild } from "./node-entry.ts";

/** Each file's own module-relative names: one variable of each per module, which esbuild keeps apart. */
const OWN = { meta: "__plinthImportMeta", __dirname: "__plinthDirname", __filename: "__plinthFilename" };
/** Spelt apart: the tests' bundle of the server rewrites that expression wherever it is written out. */
const IMPORT_META = ["import", "meta"].join(".");

const LOADERS: Record<string, Loader> = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".tsx": "tsx", ".jsx": "jsx" };
/** A package file Node loads itself; anything else in node_modules (TypeScript) is built in. */
const NODE_LOADS = /\.(js|mjs|cjs|node)$/;
const RESOLVED = Symbol("resolved");

/** The package's SDK exports a plugin may import, by their sources (node.sdk maps each to the build). */
const OWN_EXPORTS: Record<string, string> = { "plinth/sdk": "sdk/mod.ts", "plinth/sdk/testing": "sdk/testing.ts" };

/** Why a plugin is not built, when it is not. */
export type Unbuilt = { why: string };

/** The package folder a module in node_modules belongs to (`…/node_modules/@scope/name`), if it is in one. */
function packageOf(path: string): string | undefined {
  const match = /^(.*\/node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(path);
  return match?.[1];
}

/** Builds `module` into `dir`; the bundle's path, or why the plugin loads through tsx instead. */
export async function bundlePlugin(module: string, node: NodeBuild, dir: string): Promise<string | Unbuilt> {
  let unbundlable: string | undefined;
  let requires = false;
  // A plugin that is a package of its own (module: "@team/models") has its files in node_modules too.
  const ownPackage = packageOf(module);
  const files: Plugin = {
    name: "plinth-plugin-files",
    setup(b) {
      b.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === "entry-point" || args.pluginData === RESOLVED) return undefined;
        requires ||= args.kind === "require-call" || args.kind === "require-resolve";
        // `plinth/sdk` is always this server's SDK, the plugin thread's instance: whether the
        // plugin's folder has the package or not (a bare folder), and whatever version it has
        // (its copy gives the editor its types).
        const own = OWN_EXPORTS[args.path];
        if (own) {
          const built = node.sdk.get(join(PLINTH_DIR, own));
          if (built) return { path: built, external: true };
        }
        const found = await b.resolve(args.path, {
          kind: args.kind,
          importer: args.importer,
          resolveDir: args.resolveDir,
          pluginData: RESOLVED,
        });
        if (found.errors.length > 0 || found.external) return found;
        const sdk = node.sdk.get(found.path);
        if (sdk) return { path: sdk, external: true };
        const inPackage = found.path.includes("/node_modules/") && packageOf(found.path) !== ownPackage;
        if (inPackage && NODE_LOADS.test(found.path)) return { path: found.path, external: true };
        return found;
      });
      b.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, async (args) => {
        const text = await readFile(args.path, "utf8");
        if (text.includes(`${IMPORT_META}.resolve`)) unbundlable ??= `${args.path} uses ${IMPORT_META}.resolve`;
        if (!text.includes(IMPORT_META) && !text.includes("__dirname") && !text.includes("__filename")) return undefined;
        const folder = dirname(args.path);
        const meta = { url: pathToFileURL(args.path).href, dirname: folder, filename: args.path };
        const declarations = `var ${OWN.meta} = ${JSON.stringify(meta)}, ${OWN.__dirname} = ${JSON.stringify(folder)}, ${OWN.__filename} = ${JSON.stringify(args.path)};`;
        // On the first line, after a hashbang: the source map's lines stay the file's.
        const hashbang = text.startsWith("#!") ? text.indexOf("\n") + 1 : 0;
        const contents = hashbang > 0 ? `${text.slice(0, hashbang)}${declarations}${text.slice(hashbang)}` : declarations + text;
        return { contents, loader: LOADERS[extname(args.path)] ?? "js" };
      });
    },
  };
  const result = await withEsbuild(() =>
    build({
      entryPoints: [module],
      bundle: true,
      write: false,
      // In the folder it is written to: the source map's paths are relative to it.
      outfile: join(dir, "plugin.mjs"),
      metafile: true,
      platform: "node",
      format: "esm",
      target: "node20",
      // Node's own conditions, without the "module" one esbuild adds for bundlers.
      conditions: [],
      sourcemap: "inline",
      sourcesContent: false,
      logLevel: "silent",
      define: { [IMPORT_META]: OWN.meta, __dirname: OWN.__dirname, __filename: OWN.__filename },
      plugins: [files],
    }).catch((error: Error) => error),
  );
  if (result instanceof Error) return { why: result.message };
  if (unbundlable) return { why: unbundlable };
  const exports = Object.values(result.metafile.outputs).find((output) => output.entryPoint)?.exports ?? [];
  if (!exports.includes("default")) return { why: "it has no default export" };
  let code = result.outputFiles.find((file) => file.path.endsWith(".mjs"))!.text;
  // esbuild leaves an import() of a computed name as it is, silently; from the bundle it
  // would resolve from the wrong folder.
  await initLexer;
  const computed = parseModule(code)[0].find((entry) => entry.d > -1 && entry.n === undefined);
  if (computed) return { why: `it imports a computed name: ${code.slice(computed.ss, computed.se).slice(0, 80)}` };
  // A CommonJS file's require(), which esbuild leaves to the runtime's `require`: an ES
  // module has none. On the first line, so the source map holds.
  if (requires) {
    code = `import { createRequire as __plinthCreateRequire } from "node:module"; const require = __plinthCreateRequire(${JSON.stringify(pathToFileURL(module).href)});${code}`;
  }
  const file = join(dir, `${createHash("sha256").update(code).digest("hex").slice(0, 16)}.mjs`);
  if (!existsSync(file)) {
    const partial = `${file}.${process.pid}`;
    await writeFile(partial, code);
    await rename(partial, file);
  }
  return file;
}
