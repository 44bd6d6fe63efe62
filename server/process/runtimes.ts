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
}

const require = createRequire(import.meta.url);
const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), "../../sdk");

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
  // Dynamic import needs read access to the module graph: the plugin's folder, the SDK,
  // and the node_modules that their npm imports resolve from.
  const read = [dirname(target.module), sdkDir, nodeModulesOf(target.module), nodeModulesOf(sdkDir), ...(p.read ?? [])];
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
}

export function childCommand(target: PluginTarget, settings: WorkerSettings): ChildCommand {
  const { denoDir } = settings;
  const tail = [target.module, String(settings.maxFrameBytes), String(settings.progressIntervalMs)];
  const env = { ...process.env, NO_COLOR: "1" };
  if (target.runtime === "deno") {
    return {
      file: denoBinary(),
      args: ["run", "--quiet", "--no-prompt", ...denoFlags(target), join(sdkDir, "adapters/deno.ts"), ...tail],
      env: { ...env, DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1" },
    };
  }
  return {
    file: process.execPath,
    args: ["--import", tsxLoader, join(sdkDir, "adapters/node.ts"), ...tail],
    env,
  };
}
