/**
 * A Node plugin built to one ES module, so that its thread loads it with no TypeScript
 * loader (node-entry.ts says why). Built once per plugin load (and per reload), in the
 * server, into node_modules/.cache/plinth/plugins, named by its content.
 *
 * The bundle behaves as the plugin's files do where they are:
 * - its imports of the SDK go to the build's SDK, the plugin thread's own modules;
 * - packages in node_modules (JavaScript) are left to Node, imported by the absolute path
 *   they resolve to from the plugin's folder, so the plugin's own node_modules serve;
 * - each file keeps its own `import.meta.url`, `import.meta.dirname`/`filename` and
 *   `__dirname`/`__filename`: a plugin finds its data files beside it;
 * - a stack trace names the plugin's files and lines (an inline source map).
 * What a bundle cannot do as the files would (a `require` or `import()` of a computed
 * name, `import.meta.resolve`), or a module with no default export, is not built: the
 * plugin then loads through tsx as before, with that loader's messages.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, extname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { build, type Loader, type Plugin } from "esbuild";
import { withEsbuild } from "./esbuild.ts";
import { CACHE_DIR, type NodeBuild } from "./node-entry.ts";

/** What each file's module-relative names become: one variable of each per module, which esbuild keeps apart. */
const OWN = {
  url: "__plinthImportMetaUrl",
  dirname: "__plinthImportMetaDirname",
  filename: "__plinthImportMetaFilename",
  __dirname: "__plinthDirname",
  __filename: "__plinthFilename",
};
/** Spelt apart: the tests' bundle of the server rewrites that expression wherever it is written out. */
const IMPORT_META = ["import", "meta"].join(".");

const LOADERS: Record<string, Loader> = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".tsx": "tsx", ".jsx": "jsx" };
/** A package file Node loads itself; anything else in node_modules (TypeScript) is built in. */
const NODE_LOADS = /\.(js|mjs|cjs|node)$/;
const RESOLVED = Symbol("resolved");
/** An import() or require() in the built code of anything but a string: the name is computed when it runs. */
const COMPUTED = /\b(?:import|__require|require)\((?!\s*"[^"]*"\s*\))/;

/** Why a plugin is not built, when it is not. */
export type Unbuilt = { why: string };

/** Builds `module`; its path, or why it loads through tsx instead. */
export async function bundlePlugin(module: string, node: NodeBuild): Promise<string | Unbuilt> {
  let unbundlable: string | undefined;
  let requires = false;
  const files: Plugin = {
    name: "plinth-plugin-files",
    setup(b) {
      b.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === "entry-point" || args.pluginData === RESOLVED) return undefined;
        const found = await b.resolve(args.path, {
          kind: args.kind,
          importer: args.importer,
          resolveDir: args.resolveDir,
          pluginData: RESOLVED,
        });
        if (found.errors.length > 0 || found.external) return found;
        const sdk = node.sdk.get(found.path);
        if (sdk) return { path: sdk, external: true };
        if (found.path.includes("/node_modules/") && NODE_LOADS.test(found.path)) {
          requires ||= args.kind === "require-call" || args.kind === "require-resolve";
          return { path: found.path, external: true };
        }
        return found;
      });
      b.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, (args) => {
        const text = readFileSync(args.path, "utf8");
        if (text.includes(`${IMPORT_META}.resolve`)) unbundlable ??= `${args.path} uses ${IMPORT_META}.resolve`;
        if (!text.includes(IMPORT_META) && !text.includes("__dirname") && !text.includes("__filename")) return undefined;
        const dir = dirname(args.path);
        const own = [
          [OWN.url, pathToFileURL(args.path).href],
          [OWN.dirname, dir],
          [OWN.filename, args.path],
          [OWN.__dirname, dir],
          [OWN.__filename, args.path],
        ];
        // On the first line, after a hashbang: the source map's lines stay the file's.
        const declarations = `var ${own.map(([name, value]) => `${name} = ${JSON.stringify(value)}`).join(", ")};`;
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
      outfile: join(CACHE_DIR, "plugins/plugin.mjs"),
      metafile: true,
      platform: "node",
      format: "esm",
      target: "node20",
      // Node's own conditions, without the "module" one esbuild adds for bundlers.
      conditions: [],
      sourcemap: "inline",
      sourcesContent: false,
      logLevel: "silent",
      define: {
        [`${IMPORT_META}.url`]: OWN.url,
        [`${IMPORT_META}.dirname`]: OWN.dirname,
        [`${IMPORT_META}.filename`]: OWN.filename,
        __dirname: OWN.__dirname,
        __filename: OWN.__filename,
      },
      plugins: [files],
    }).catch((error: Error) => error),
  );
  if (result instanceof Error) return { why: result.message };
  if (unbundlable) return { why: unbundlable };
  const exports = Object.values(result.metafile.outputs).find((output) => output.entryPoint)?.exports ?? [];
  if (!exports.includes("default")) return { why: "it has no default export" };
  let code = result.outputFiles.find((file) => file.path.endsWith(".mjs"))!.text;
  // esbuild leaves an import() or require() of a computed name as it is, silently.
  const computed = COMPUTED.exec(code);
  if (computed) return { why: `it ${computed[0]}…: a computed name, resolved from where its file is` };
  // A CommonJS file's require() of a package, which esbuild leaves to the runtime's
  // `require`: an ES module has none. On the first line, so the source map holds.
  if (requires)
    code = `import { createRequire as __plinthCreateRequire } from "node:module"; const require = __plinthCreateRequire(${JSON.stringify(pathToFileURL(module).href)});${code}`;
  const dir = join(CACHE_DIR, "plugins");
  const file = join(dir, `${createHash("sha256").update(code).digest("hex").slice(0, 16)}.mjs`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    const partial = `${file}.${process.pid}`;
    writeFileSync(partial, code);
    renameSync(partial, file);
  }
  return file;
}
