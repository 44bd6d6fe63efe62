/**
 * The command line that starts a plugin child on each runtime. Always the real
 * binary, never a wrapper (npx, deno's bin.cjs): a wrapper would take the SIGTERM
 * meant for the plugin.
 */
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";

export type Runtime = "node" | "deno";

/** Deno permissions granted to a plugin beyond reading its own code. */
export interface DenoPermissions {
  read?: string[] | undefined;
  write?: string[] | undefined;
  net?: string[] | undefined;
  env?: string[] | undefined;
  run?: string[] | undefined;
}

export interface PluginTarget {
  /** Absolute path of the plugin module. */
  module: string;
  runtime: Runtime;
  permissions?: DenoPermissions;
  /** The whole child's memory, runtime, heap and buffers, in MiB; unbounded when unset. */
  maxMemoryMb?: number | undefined;
}

const require = createRequire(import.meta.url);
const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), "../../sdk");
/** The generated protocol code the SDK imports (the plugin thread loads it as a worker, with read permission). */
const genDir = resolve(sdkDir, "../gen");

/** The tsx loader, resolved once so the child does not depend on the cwd. */
const tsxLoader = pathToFileURL(require.resolve("tsx")).href;

/** The native deno binary of the npm `deno` package. */
export function denoBinary(): string {
  const pkg = dirname(require.resolve("deno/package.json"));
  return join(pkg, "deno");
}

/** The nearest node_modules above the module, where its npm imports resolve. */
function nodeModulesOf(file: string): string | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules");
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

function denoFlags(target: PluginTarget): string[] {
  const p = target.permissions ?? {};
  // Dynamic import and workers need read access to the module graph: the plugin's
  // folder, the SDK and its generated code, and the node_modules their npm imports
  // resolve from.
  const read = [dirname(target.module), sdkDir, genDir, nodeModulesOf(target.module), nodeModulesOf(sdkDir), ...(p.read ?? [])];
  const unique = [...new Set(read.filter((x): x is string => typeof x === "string"))];
  const flags = [`--allow-read=${unique.join(",")}`];
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
}

/**
 * Address space Deno reserves at start as writable data (its code range and snapshot):
 * not memory in use, but counted by RLIMIT_DATA, so a Deno child's limit adds it.
 */
const DENO_RESERVED_MB = 640;

/**
 * The memory limit as the kernel enforces it for the whole process (RLIMIT_DATA: heap,
 * buffers, every private writable mapping): the runtime starts under `sh`, which sets
 * the limit and replaces itself with the runtime (exec), so no wrapper stays behind.
 */
function limited(command: ChildCommand, megabytes: number | undefined): ChildCommand {
  if (megabytes === undefined) return command;
  const kilobytes = String(Math.round(megabytes * 1024));
  return { ...command, file: "/bin/sh", args: ["-c", 'ulimit -d "$0" && exec "$@"', kilobytes, command.file, ...command.args] };
}

export function childCommand(target: PluginTarget, settings: WorkerSettings): ChildCommand {
  const { denoDir } = settings;
  const tail = [target.module, String(settings.maxFrameBytes), String(settings.progressIntervalMs)];
  const env = { ...process.env, NO_COLOR: "1" };
  const memory = target.maxMemoryMb;
  if (target.runtime === "deno") {
    const v8 = memory === undefined ? [] : [`--v8-flags=--max-old-space-size=${Math.floor(memory)}`];
    const command = {
      file: settings.denoBinary ?? denoBinary(),
      args: ["run", "--quiet", "--no-prompt", ...v8, ...denoFlags(target), join(sdkDir, "adapters/deno.ts"), ...tail],
      env: { ...env, DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1" },
    };
    return limited(command, memory === undefined ? undefined : memory + DENO_RESERVED_MB);
  }
  // The plugin thread's heap is bounded too, so that its running out ends the call cleanly.
  const command = {
    file: process.execPath,
    args: ["--import", tsxLoader, join(sdkDir, "adapters/node.ts"), ...tail, ...(memory ? [String(Math.floor(memory * 0.75))] : [])],
    env,
  };
  return limited(command, memory);
}
