/**
 * Reads and validates the YAML config. Errors name the key and say what to fix:
 * `config engine.max_children: Too small: expected number to be >0, got -1`.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { PlinthError } from "../errors.ts";
import { PLINTH_DIR } from "../package-root.ts";
import type { Role } from "../roles.ts";
import { type Config, configSchema } from "./schema.ts";

/** The repository root: where the example plugins live. */
const root = PLINTH_DIR;

/** The example plugins that the embedded default loads. */
export const examplePlugins = [
  { module: "plugins/system-test/mod.ts", runtime: "node" },
  { module: "plugins/iris/mod.ts", runtime: "node" },
] as const;

/** A token as the server keeps it: its hash only, whatever the config gave. */
export interface TokenHash {
  name: string;
  sha256: string;
  roles: Role[];
  /** Milliseconds since the epoch after which the token is refused. */
  expiresAt?: number;
}

export interface ResolvedConfig extends Omit<Config, "server"> {
  server: Omit<Config["server"], "auth"> & {
    auth?: Omit<NonNullable<Config["server"]["auth"]>, "tokens"> & { tokens: TokenHash[] };
  };
  plugins: NonNullable<Config["plugins"]>;
  backend: Config["backend"] & { path: string };
  /** Where relative paths in the config are from; what clients see of paths is relative to it. */
  base: string;
}

/** Where the SQLite file goes when the config does not say. */
export const DEFAULT_DB_PATH = "data/plinth.db";

function keyOf(path: PropertyKey[]): string {
  return path.reduce<string>((key, part) => (typeof part === "number" ? `${key}[${part}]` : key ? `${key}.${String(part)}` : String(part)), "");
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  return path.reduce<unknown>((value, part) => (value as Record<PropertyKey, unknown> | undefined)?.[part], input);
}

/** What the command line gave, by config key: an error in one names the option, not the key. */
type FromFlags = ReadonlyMap<string, string>;

function describeIssue(issue: z.core.$ZodIssue, input: unknown, flags: FromFlags): string {
  const key = keyOf(issue.path);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((k) => `config ${key ? `${key}.` : ""}${k}: unknown key`).join("; ");
  }
  const value = valueAt(input, issue.path);
  const got = value === undefined ? "" : `, got ${JSON.stringify(value)}`;
  return `${flags.get(key) ?? `config ${key || "(top level)"}`}: ${issue.message}${got}`;
}

/**
 * Validates a parsed config; plugin module paths, their permissions' paths and
 * backend.path resolve against baseDir, the default database path against the working
 * directory.
 */
export function parseConfig(input: unknown, baseDir: string, flags: FromFlags = new Map()): ResolvedConfig {
  const parsed = configSchema.safeParse(input ?? {});
  if (!parsed.success) {
    throw new PlinthError("invalid_argument", parsed.error.issues.map((i) => describeIssue(i, input, flags)).join("; "));
  }
  const config = parsed.data;
  const plugins = (config.plugins ?? examplePlugins.map((p) => ({ ...p, module: resolve(root, p.module), watch: false }))).map((p, i) => ({
    ...p,
    module: resolveModule(p.module, baseDir, i),
    ...("permissions" in p && p.permissions ? { permissions: resolvePermissionPaths(p.permissions, baseDir) } : {}),
  }));
  const path = config.backend.path ? resolve(baseDir, config.backend.path) : resolve(DEFAULT_DB_PATH);
  const { auth, tls, ...server } = config.server;
  return {
    ...config,
    server: {
      ...server,
      ...(tls ? { tls: resolveTls(tls, baseDir) } : {}),
      ...(auth ? { auth: { ...auth, tokens: uniqueTokens(auth.tokens.map((token, i) => hashToken(token, i, baseDir))) } } : {}),
    },
    plugins,
    backend: { ...config.backend, path },
    base: resolve(baseDir),
  };
}

/** The folders a plugin may read and write, relative to the config's folder as its module is. */
function resolvePermissionPaths<P extends { read?: string[] | undefined; write?: string[] | undefined }>(permissions: P, baseDir: string): P {
  const paths = (list: string[] | undefined) => list?.map((path) => resolve(baseDir, path));
  return {
    ...permissions,
    ...(permissions.read ? { read: paths(permissions.read) } : {}),
    ...(permissions.write ? { write: paths(permissions.write) } : {}),
  };
}

/**
 * A plugin's module: a file, relative to the config's folder (or absolute), or else the
 * name of a package installed there (`my-plugin`, `@team/plugin/sub`), resolved as Node
 * resolves an import: the package's exports (import, node or default), else its main.
 */
function resolveModule(spec: string, baseDir: string, i: number): string {
  const path = isAbsolute(spec) ? spec : resolve(baseDir, spec);
  // A file by its name (a missing one fails to load, with its own message), else a package.
  const file = /\.(m?[jt]sx?|c[jt]s)$/.test(spec);
  if (spec.startsWith(".") || isAbsolute(spec) || file || existsSync(path)) return path;
  const key = `config plugins[${i}].module`;
  const match = /^((?:@[^/]+\/)?[^/@]+)(\/.*)?$/.exec(spec);
  if (!match) throw new PlinthError("invalid_argument", `${key}: ${spec} is neither a file in ${baseDir} nor a package name`);
  const [, name, subpath] = match as unknown as [string, string, string | undefined];
  // Where Node would look (node_modules of the folder and its parents); not through the
  // package's own exports, which need not export its package.json.
  const manifest = (createRequire(join(baseDir, "noop.js")).resolve.paths(name) ?? [])
    .map((folder) => join(folder, name, "package.json"))
    .find((candidate) => existsSync(candidate));
  if (!manifest) {
    throw new PlinthError("invalid_argument", `${key}: ${spec} is neither a file in ${baseDir} nor a package installed there (npm install ${name})`);
  }
  const pkg = JSON.parse(readFileSync(manifest, "utf8")) as { exports?: unknown; main?: string };
  const entry = exportedEntry(pkg.exports, subpath ? `.${subpath}` : ".") ?? (subpath ? `.${subpath}` : (pkg.main ?? "index.js"));
  return resolve(dirname(manifest), entry);
}

/** The file a package's `exports` gives for `subpath` under the import conditions. */
function exportedEntry(exports: unknown, subpath: string): string | undefined {
  if (exports === undefined || exports === null) return undefined;
  if (typeof exports === "string") return subpath === "." ? exports : undefined;
  const map = exports as Record<string, unknown>;
  const target = Object.keys(map).some((k) => k.startsWith(".")) ? map[subpath] : subpath === "." ? map : undefined;
  if (typeof target === "string") return target;
  if (target && typeof target === "object") {
    for (const condition of ["import", "node", "default"]) {
      const found = exportedEntry((target as Record<string, unknown>)[condition], ".");
      if (found) return found;
    }
  }
  return undefined;
}

/** The token as a hash: read from its file or variable now, kept nowhere else. */
function hashToken(token: NonNullable<Config["server"]["auth"]>["tokens"][number], i: number, baseDir: string): TokenHash {
  const key = `config server.auth.tokens[${i}]`;
  let secret: string | undefined;
  if (token.file) {
    try {
      secret = readFileSync(resolve(baseDir, token.file), "utf8").trim();
    } catch (error) {
      throw new PlinthError("invalid_argument", `${key}.file: cannot read ${token.file}: ${(error as Error).message}`);
    }
  } else if (token.env) {
    secret = process.env[token.env]?.trim();
    if (!secret) throw new PlinthError("invalid_argument", `${key}.env: ${token.env} is not set`);
  }
  if (secret !== undefined && secret.length < 16) {
    throw new PlinthError("invalid_argument", `${key}: the token is ${secret.length} characters; use at least 16 (e.g. openssl rand -hex 32)`);
  }
  const sha256 = token.sha256 ?? createHash("sha256").update(secret!).digest("hex");
  return { name: token.name, sha256, roles: token.roles, ...(token.expires ? { expiresAt: Date.parse(token.expires) } : {}) };
}

/** Two tokens alike would make an identity ambiguous: refused, naming both. */
function uniqueTokens(tokens: TokenHash[]): TokenHash[] {
  tokens.forEach((token, i) => {
    const j = tokens.findIndex((other) => other.sha256 === token.sha256 || other.name === token.name);
    if (j < i) {
      const what = tokens[j]!.name === token.name ? `name ${token.name}` : "token";
      throw new PlinthError("invalid_argument", `config server.auth.tokens[${i}]: has the same ${what} as server.auth.tokens[${j}]`);
    }
  });
  return tokens;
}

/** TLS files, resolved and checked now: a missing one is a config error, not a failed handshake later. */
function resolveTls(tls: NonNullable<Config["server"]["tls"]>, baseDir: string): NonNullable<Config["server"]["tls"]> {
  const resolved = {
    ...tls,
    cert: resolve(baseDir, tls.cert),
    key: resolve(baseDir, tls.key),
    ...(tls.client_ca ? { client_ca: resolve(baseDir, tls.client_ca) } : {}),
  };
  for (const field of ["cert", "key", "client_ca"] as const) {
    const file = resolved[field];
    if (file === undefined) continue;
    try {
      readFileSync(file);
    } catch (error) {
      throw new PlinthError("invalid_argument", `config server.tls.${field}: cannot read ${file}: ${(error as Error).message}`);
    }
  }
  return resolved;
}

/** The server's command-line options that stand for config keys. */
export interface ConfigFlags {
  /** --address: server.address. */
  address?: string | undefined;
  /** --http-address: http.address ("off" for none). */
  httpAddress?: string | undefined;
  /** --watch: plugins[].watch for every plugin. */
  watch?: boolean | undefined;
}

/** The options set in the parsed file, as the file would say them, checked by the same schema. */
function withFlags(input: unknown, flags: ConfigFlags): { input: unknown; named: FromFlags } {
  const named = new Map<string, string>();
  // A file that is not a mapping is reported as it is.
  const isMapping = (v: unknown): v is Record<string, unknown> | null | undefined =>
    v === null || v === undefined || (typeof v === "object" && !Array.isArray(v));
  if (!isMapping(input)) return { input, named };
  const out: Record<string, unknown> = { ...input };
  const set = (section: string, key: string, value: string | undefined, flag: string) => {
    const current = out[section];
    if (value === undefined || !isMapping(current)) return;
    out[section] = { ...current, [key]: value };
    named.set(`${section}.${key}`, flag);
  };
  set("server", "address", flags.address, "--address");
  set("http", "address", flags.httpAddress, "--http-address");
  return { input: out, named };
}

/** Loads the config file, or the embedded default when there is none, with the command line's options over it. */
export async function loadConfig(file?: string, flags: ConfigFlags = {}): Promise<ResolvedConfig> {
  let input: unknown;
  let base = root;
  if (!file) {
    // The embedded default also serves Connect and gRPC-Web (curl, browsers) on 8080.
    input = { http: { address: "127.0.0.1:8080" } };
  } else {
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
    input = doc.toJS();
    base = dirname(resolve(file));
  }
  const merged = withFlags(input, flags);
  const config = parseConfig(merged.input, base, merged.named);
  if (flags.watch) for (const plugin of config.plugins) plugin.watch = true;
  return config;
}
