/**
 * Reads and validates the YAML config. Errors name the key and say what to fix:
 * `config engine.max_children: Too small: expected number to be >0, got -1`.
 */
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { PlinthError } from "../errors.ts";
import { type Config, configSchema } from "./schema.ts";

/** The repository root: where the example plugins live. */
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The example plugins that the embedded default loads. */
export const examplePlugins = [
  { module: "plugins/system-test/mod.ts", runtime: "node" },
  { module: "plugins/iris/mod.ts", runtime: "node" },
] as const;

export interface ResolvedConfig extends Config {
  plugins: NonNullable<Config["plugins"]>;
  backend: Config["backend"] & { path: string };
}

/** Where the SQLite file goes when the config does not say. */
export const DEFAULT_DB_PATH = "data/plinth.db";

function keyOf(path: PropertyKey[]): string {
  return path.reduce<string>((key, part) => (typeof part === "number" ? `${key}[${part}]` : key ? `${key}.${String(part)}` : String(part)), "");
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  return path.reduce<unknown>((value, part) => (value as Record<PropertyKey, unknown> | undefined)?.[part], input);
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const key = keyOf(issue.path);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((k) => `config ${key ? `${key}.` : ""}${k}: unknown key`).join("; ");
  }
  const value = valueAt(input, issue.path);
  const got = value === undefined ? "" : `, got ${JSON.stringify(value)}`;
  return `config ${key || "(top level)"}: ${issue.message}${got}`;
}

/**
 * Validates a parsed config; plugin module paths and backend.path resolve against
 * baseDir, the default database path against the working directory.
 */
export function parseConfig(input: unknown, baseDir: string): ResolvedConfig {
  const parsed = configSchema.safeParse(input ?? {});
  if (!parsed.success) {
    throw new PlinthError("invalid_argument", parsed.error.issues.map((i) => describeIssue(i, input)).join("; "));
  }
  const config = parsed.data;
  const plugins = (config.plugins ?? examplePlugins.map((p) => ({ ...p, module: resolve(root, p.module) }))).map((p) => ({
    ...p,
    module: isAbsolute(p.module) ? p.module : resolve(baseDir, p.module),
  }));
  const path = config.backend.path ? resolve(baseDir, config.backend.path) : resolve(DEFAULT_DB_PATH);
  return { ...config, plugins, backend: { ...config.backend, path } };
}

/** Loads the config file, or the embedded default when there is none. */
export async function loadConfig(file?: string): Promise<ResolvedConfig> {
  if (!file) return parseConfig({}, root);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new PlinthError("invalid_argument", `config file ${file} cannot be read: ${(error as Error).message}`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new PlinthError("invalid_argument", `config file ${file} is not valid YAML: ${doc.errors[0]!.message}`);
  }
  return parseConfig(doc.toJS(), dirname(resolve(file)));
}
