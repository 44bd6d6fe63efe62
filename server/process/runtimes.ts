/**
 * The command line that starts a plugin child on each runtime. Always the real
 * binary, never a wrapper (npx, deno's bin.cjs): a wrapper would take the SIGTERM
 * meant for the plugin.
 */

import { type Dirent, existsSync, readdirSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { PlinthError } from "../errors.ts";
import { BUILT, PLINTH_DIR } from "../package-root.ts";
import type { NodeBuild } from "./node-entry.ts";

export type Runtime = "node" | "deno";

/** Deno permissions granted to a plugin beyond reading its own code. */
export interface DenoPermissions {
  read?: string[] | undefined;
  write?: string[] | undefined;
  net?: string[] | undefined;
  env?: string[] | undefined;
  run?: string[] | undefined;
  /** Node only: native addons may load (--allow-addons); the config refuses it for Deno. */
  addons?: boolean | undefined;
}

/** A plugin call by the name configs and messages use. */
export const CALL_NAMES = ["instantiate", "fit", "predict", "data_access"] as const;
export type CallName = (typeof CALL_NAMES)[number];

export interface PluginTarget {
  /** Absolute path of the plugin module. */
  module: string;
  runtime: Runtime;
  permissions?: DenoPermissions;
  /** The plugin's memory in MiB (see limited()); unbounded when unset. */
  maxMemoryMb?: number | undefined;
  /** What each child keeps resident, in MiB of serialized instances (plugins[].resident_mb); 0 or unset: nothing. */
  residentMb?: number | undefined;
  /** Environment variables passed on from the server's, besides the few every child gets. */
  env?: string[] | undefined;
  /** How messages name the plugin: its module as the config gives it. */
  label?: string | undefined;
  /** Milliseconds a call of each kind may go without progress or a heartbeat (plugins[].heartbeat_timeout); unset: no limit. */
  heartbeatMs?: Partial<Record<CallName, number>> | undefined;
  /** How many times its code was reloaded: children serve only calls of their generation. */
  generation?: number | undefined;
  /** Its config key, "plugins[0]": a denied permission's error names the key that allows it. */
  key?: string | undefined;
}

/** What every child gets of the server's environment: never its tokens or other secrets. */
const BASE_ENV = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

function childEnv(names: string[] | undefined): Record<string, string> {
  // glibc's malloc serves a large block from an mmap of its own, returned to the system when
  // freed, but after the first such free it raises that threshold up to 32 MB and keeps
  // later blocks in its heap, which it rarely gives back: a child that loads models of tens
  // of MB in turn would keep every one it ever let go of. A fixed threshold keeps it
  // returning them (the plugin's env list may set it otherwise).
  const env: Record<string, string> = { NO_COLOR: "1", MALLOC_MMAP_THRESHOLD_: String(4 << 20) };
  for (const name of [...BASE_ENV, ...(names ?? [])]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

const require = createRequire(import.meta.url);
const sdkDir = join(PLINTH_DIR, "sdk");
/** The generated protocol code the SDK imports (the plugin thread loads it as a worker, with read permission). */
const genDir = resolve(sdkDir, "../gen");
/**
 * The Deno child's entry: the SDK's source in a clone; in the installed package the build,
 * since Deno strips no types under node_modules (ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING),
 * and a plugin's `plinth/sdk` is then dist/sdk/mod.mjs, the thread's own instance.
 */
const denoEntry = BUILT ? join(PLINTH_DIR, "dist/sdk/adapters/deno.mjs") : join(sdkDir, "adapters/deno.ts");
const distDir = BUILT ? join(PLINTH_DIR, "dist") : undefined;

/**
 * The import map a Deno child gets (unless the plugin has a deno.json of its own, whose
 * imports Deno would then ignore): `plinth/sdk` and `npm:plinth/sdk` are the SDK the
 * child's thread runs, wherever the plugin is (a bare folder has no node_modules to find
 * them in), as a Node plugin's are when the server builds it.
 */
export function denoImportMap(): string {
  const sdk = (name: string) => pathToFileURL(BUILT ? join(PLINTH_DIR, `dist/sdk/${name}.mjs`) : join(sdkDir, `${name}.ts`)).href;
  const imports: Record<string, string> = {};
  for (const [entry, name] of [
    ["plinth/sdk", "mod"],
    ["plinth/sdk/testing", "testing"],
  ]) {
    imports[entry!] = sdk(name!);
    imports[`npm:${entry}`] = sdk(name!);
  }
  return JSON.stringify({ imports }, null, 2);
}

/** Whether Deno finds a config file (deno.json, deno.jsonc) for the module: in its folder or one above. */
function hasDenoConfig(module: string): boolean {
  for (let dir = dirname(module); ; dir = dirname(dir)) {
    if (existsSync(join(dir, "deno.json")) || existsSync(join(dir, "deno.jsonc"))) return true;
    if (dirname(dir) === dir) return false;
  }
}

function importMapFlag(target: PluginTarget, importMap: string | undefined): string[] {
  return importMap && !hasDenoConfig(target.module) ? [`--import-map=${importMap}`] : [];
}

/** The tsx loader, resolved once so the child does not depend on the cwd. */
const tsxLoader = pathToFileURL(require.resolve("tsx")).href;
/**
 * A Node child whose plugin the server did not build: in the installed package the built
 * child, its thread registering tsx for the plugin (node-thread-tsx.mjs); in a clone the
 * SDK's sources through tsx.
 */
const tsxEntry = BUILT ? [join(PLINTH_DIR, "dist/sdk/adapters/node.mjs")] : ["--import", tsxLoader, join(sdkDir, "adapters/node.ts")];
const tsxEnv: Record<string, string> = BUILT ? { PLINTH_PLUGIN_LOADER: "tsx" } : {};

/** The native deno binary of the npm `deno` package (a devDependency of Plinth's; a project that installed Plinth adds its own). */
export function denoBinary(): string {
  let pkg: string;
  try {
    pkg = dirname(require.resolve("deno/package.json"));
  } catch {
    throw new PlinthError(
      "invalid_argument",
      "a plugin with runtime: deno needs Deno: install the npm package beside Plinth (npm install deno), or give its binary as engine.deno_binary",
    );
  }
  return join(pkg, "deno");
}

const leaving = new Map<string, string[]>();

/** Symlinks under `dir` (not followed) whose target is outside every folder in `allowed`; computed once per folder. */
function linksLeaving(dir: string, allowed: string[]): string[] {
  const key = `${dir}\0${allowed.join("\0")}`;
  let found = leaving.get(key);
  if (found) return found;
  found = [];
  const inside = (path: string) => allowed.some((root) => path === root || path.startsWith(`${realpathOr(root)}/`) || path.startsWith(`${root}/`));
  const walk = (folder: string) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(folder, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(folder, entry.name);
      if (entry.isSymbolicLink()) {
        const target = realpathOr(path);
        if (!inside(target)) found!.push(path);
      } else if (entry.isDirectory()) walk(path);
    }
  };
  walk(dir);
  leaving.set(key, found);
  return found;
}

/**
 * `paths` as Node permission entries that leave out every symlink leading outside them
 * all. Node 20 checks the path it is given, then follows links: `--allow-fs-read=/p`
 * with `/p/db` a link to the server's database lets the plugin read the database, and
 * Node has no flag to deny a path. So a folder with such a link below it is allowed
 * entry by entry, without the link.
 */
function withoutLinksLeaving(paths: string[]): string[] {
  const links = new Set(paths.flatMap((dir) => linksLeaving(dir, paths)));
  if (links.size === 0) return paths;
  const holds = (dir: string) => [...links].some((link) => link.startsWith(`${dir}/`));
  const split = (path: string): string[] => {
    if (links.has(path)) return [];
    if (!holds(path)) return [path];
    return readdirSync(path, { withFileTypes: true }).flatMap((entry) => split(join(path, entry.name)));
  };
  return paths.flatMap(split);
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/** The nearest node_modules above the module, where its npm imports resolve. */
function nodeModulesOf(file: string): string | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules");
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The package.json files in `dir` and above: Node reads them to tell a module's type. */
function packageFilesAbove(dir: string): string[] {
  const files: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    const file = join(d, "package.json");
    if (existsSync(file)) files.push(file);
    if (dirname(d) === d) return files;
  }
}

/**
 * Node's permission model for a Node plugin that declares `permissions` (Node 20: files
 * only). It reads what a Deno plugin reads by default, plus the package.json files Node
 * consults, and what `read` lists; it writes only what `write` lists. Workers (the plugin
 * thread) and child processes (tsx compiles TypeScript with esbuild's) stay allowed;
 * native addons only with `addons: true`.
 */
function nodePermissionFlags(target: PluginTarget): string[] {
  const p = target.permissions;
  if (!p) return [];
  const read = [
    dirname(target.module),
    sdkDir,
    genDir,
    distDir,
    nodeModulesOf(target.module),
    nodeModulesOf(sdkDir),
    ...packageFilesAbove(dirname(target.module)),
    ...packageFilesAbove(sdkDir),
    ...(p.read ?? []),
  ];
  const unique = [...new Set(read.filter((x): x is string => typeof x === "string"))];
  return [
    "--experimental-permission",
    "--disable-warning=ExperimentalWarning",
    "--disable-warning=SecurityWarning",
    ...withoutLinksLeaving(unique).map((path) => `--allow-fs-read=${path}`),
    ...withoutLinksLeaving(p.write ?? []).map((path) => `--allow-fs-write=${path}`),
    "--allow-worker",
    "--allow-child-process",
    ...(p.addons ? ["--allow-addons"] : []),
  ];
}

/**
 * A denied permission's message with the config key that allows it, for Deno's
 * ("Requires read access to "/x"") and Node's ("…restricted: FileSystemRead of "/x"").
 */
export function permissionHint(message: string, target: PluginTarget, base = ""): string {
  const key = target.key ?? "plugins[]";
  const deno = /Requires (read|write|net|env|run) access to "([^"]+)"/.exec(message);
  const node = /restricted: FileSystem(Read|Write) of "([^"]+)"/.exec(message);
  const found = deno ? { kind: deno[1]!, what: deno[2]! } : node ? { kind: node[1]!.toLowerCase(), what: node[2]! } : undefined;
  // Node's ERR_DLOPEN_DISABLED: a native addon (onnxruntime-node, better-sqlite3…) under the permission model.
  if (!found && message.includes("loading addons is disabled")) return `${message} (allow it with ${key}.permissions.addons: true)`;
  if (!found) return message;
  // A path through a symlink that leads out of what the plugin may use is denied by its
  // own name: allowing the link would change nothing, allowing where it leads would.
  const path = resolve(base, found.what);
  const real = found.kind === "read" || found.kind === "write" ? realpathOr(path) : path;
  if (real !== path)
    return `${message} (a symlink to ${JSON.stringify(real)}: allow that with ${key}.permissions.${found.kind}: [${JSON.stringify(real)}])`;
  return `${message} (allow it with ${key}.permissions.${found.kind}: [${JSON.stringify(found.what)}])`;
}

function denoFlags(target: PluginTarget): string[] {
  const p = target.permissions ?? {};
  // Dynamic import and workers need read access to the module graph: the plugin's
  // folder, the SDK and its generated code, and the node_modules their npm imports
  // resolve from.
  const read = [dirname(target.module), sdkDir, genDir, distDir, nodeModulesOf(target.module), nodeModulesOf(sdkDir), ...(p.read ?? [])];
  const unique = [...new Set(read.filter((x): x is string => typeof x === "string"))];
  const flags = [`--allow-read=${unique.join(",")}`];
  // Deno checks the path it is given, not where a symlink leads: a link in an allowed
  // folder to somewhere outside them all is denied by name.
  const escaping = unique.flatMap((dir) => linksLeaving(dir, unique));
  if (escaping.length > 0) flags.push(`--deny-read=${escaping.join(",")}`);
  for (const [name, list] of [
    ["write", p.write],
    ["net", p.net],
    ["env", p.env],
    ["run", p.run],
  ] as const) {
    if (list && list.length > 0) flags.push(`--allow-${name}=${list.join(",")}`);
  }
  return flags;
}

export interface ChildCommand {
  file: string;
  args: string[];
  env: Record<string, string | undefined>;
}

/** What every child is told on its command line. */
export interface WorkerSettings {
  maxFrameBytes: number;
  progressIntervalMs: number;
  denoDir: string;
  /** The deno binary; default: the npm package's. */
  denoBinary?: string | undefined;
  /** The Node child's code built as plain JavaScript (node-entry.ts); unset: sdk/adapters/node.ts through tsx. */
  node?: NodeBuild | undefined;
}

/**
 * What a child's runtime holds before its plugin allocates anything, counted by
 * RLIMIT_DATA though mostly not in use: every thread's stack (8 MiB each), and on
 * Deno each isolate's code range (512 MiB on x64: the main one and the plugin's) and a
 * V8 thread per core. Measured on x64: a Node child ~190 MiB (with its runtime's own
 * heap: tsx and the SDK, twice), a Deno child ~1,090 MiB on 2 cores.
 */
function runtimeReserveMb(runtime: Runtime): number {
  return runtime === "deno" ? 2 * 512 + 64 + 8 * availableParallelism() : 256;
}

/**
 * The limit as the kernel enforces it for the whole process (RLIMIT_DATA: heap,
 * buffers, every private writable mapping): the plugin's `megabytes` on top of what its
 * runtime reserves. The runtime starts under `sh`, which sets the limit and replaces
 * itself with the runtime (exec), so no wrapper stays behind.
 */
function limited(command: ChildCommand, megabytes: number | undefined, runtime: Runtime): ChildCommand {
  if (megabytes === undefined) return command;
  const kilobytes = String(Math.round((megabytes + runtimeReserveMb(runtime)) * 1024));
  return { ...command, file: "/bin/sh", args: ["-c", 'ulimit -d "$0" && exec "$@"', kilobytes, command.file, ...command.args] };
}

/** What each child of the plugin keeps resident at most, in bytes of serialized instances. */
export function residentBytesOf(target: PluginTarget): number {
  return Math.floor((target.residentMb ?? 0) * 2 ** 20);
}

/**
 * The command line of a child of `target`. A Node child runs the built code when its
 * plugin was built as well (`bundle`, plugin-bundle.ts), else the SDK's source through tsx.
 * A Deno child gets `importMap` (a file of denoImportMap's) unless the plugin has a deno.json.
 */
export function childCommand(target: PluginTarget, settings: WorkerSettings, bundle?: string, importMap?: string): ChildCommand {
  const { denoDir } = settings;
  const built = target.runtime === "node" && settings.node && bundle ? { entry: settings.node.entry, bundle } : undefined;
  // The resident budget goes in bytes, right after the progress interval (both adapters).
  const tail = [built?.bundle ?? target.module, String(settings.maxFrameBytes), String(settings.progressIntervalMs), String(residentBytesOf(target))];
  const env = childEnv(target.env);
  const memory = target.maxMemoryMb;
  if (target.runtime === "deno") {
    // The collector exposed, for the worker's hint once a large frame is done with (sdk/worker/gc-hint.ts).
    const v8 = [`--v8-flags=--expose-gc${memory === undefined ? "" : `,--max-old-space-size=${Math.floor(memory)}`}`];
    const command = {
      file: settings.denoBinary ?? denoBinary(),
      args: ["run", "--quiet", "--no-prompt", ...v8, ...denoFlags(target), ...importMapFlag(target, importMap), denoEntry, ...tail],
      env: { ...env, DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1" },
    };
    return limited(command, memory, "deno");
  }
  // The plugin thread's heap is bounded well below the process (three quarters of the
  // plugin's limit, and the process has the runtime's reserve on top): the heap running
  // out ends the thread, and the call, cleanly as out_of_memory, instead of V8 aborting
  // the process when the kernel refuses it memory midway through a collection.
  const permissions = nodePermissionFlags(target);
  const command = {
    file: process.execPath,
    args: ["--expose-gc", ...permissions, ...(built ? [built.entry] : tsxEntry), ...tail, ...(memory ? [String(Math.floor(memory * 0.75))] : [])],
    // tsx's cache is a folder every plugin would then write to: a restricted plugin goes without it.
    env: { ...env, ...(built ? {} : tsxEnv), ...(permissions.length > 0 ? { TSX_DISABLE_CACHE: "1" } : {}) },
  };
  return limited(command, memory, "node");
}
