/**
 * `plinth init [DIR]`: a plugin project to start from, as `npm create vite` or `deno init`
 * make one: a typed plugin, its test (node:test, and Deno), a plinth.yaml that serves it
 * with watch on, a tsconfig and a README, from cli/init-template/. The package.json is
 * made, or the one there is completed (npm install of Plinth's tarball writes one first):
 * what it has already is kept.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, relative, resolve, sep } from "node:path";
import { PLINTH_DIR } from "../server/package-root.ts";
import { UsageError } from "./arguments.ts";

/** The template's files, as written in the project (npm pack would drop a file named .gitignore). */
const FILES: Record<string, string> = {
  "plugin.ts": "plugin.ts",
  "plugin.test.ts": "plugin.test.ts",
  "plinth.yaml": "plinth.yaml",
  "tsconfig.json": "tsconfig.json",
  "README.md": "README.md",
  gitignore: ".gitignore",
};

/** What `npm init -y` puts in "test": no test at all. */
const NPM_INIT_TEST = /no test specified/;

interface PackageJson {
  name?: string;
  type?: string;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  [key: string]: unknown;
}

export interface Initialized {
  dir: string;
  /** The files written, package.json first. */
  written: string[];
  /** What was in package.json already and kept, for the user to look at. */
  kept: string[];
}

/** Writes the project into `target` (made if missing); refuses, writing nothing, when a template file is there already. */
export function initProject(target: string): Initialized {
  const dir = resolve(target);
  const clashes = Object.values(FILES).filter((name) => existsSync(join(dir, name)));
  if (clashes.length > 0) {
    throw new UsageError(
      `${join(dir, clashes[0]!)} exists: plinth init writes ${clashes.join(", ")} there; nothing was written (init another folder, or move them)`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const name = pluginName(dir);
  const { written, kept } = writePackageJson(dir, name);
  const template = join(PLINTH_DIR, "cli/init-template");
  for (const [from, to] of Object.entries(FILES)) {
    writeFileSync(join(dir, to), readFileSync(join(template, from), "utf8").replaceAll("__NAME__", name));
    written.push(to);
  }
  return { dir, written, kept };
}

/** The plugin's name, from the folder's: lower case, a letter first, letters, digits and _ (a model type is NAME.Line). */
export function pluginName(dir: string): string {
  const name = basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, "_")
    .replace(/^[^a-z]+/, "")
    .replace(/_+$/, "");
  return name || "plugin";
}

function writePackageJson(dir: string, name: string): { written: string[]; kept: string[] } {
  const file = join(dir, "package.json");
  const had = existsSync(file);
  const pkg: PackageJson = had ? JSON.parse(readFileSync(file, "utf8")) : { name: name.replaceAll("_", "-"), private: true };
  const kept: string[] = [];
  pkg.type ??= "module";
  const scripts: Record<string, string> = {
    start: "plinth serve",
    test: "node --import tsx --test plugin.test.ts",
    "test:deno": "deno test --allow-read --allow-env plugin.test.ts",
    typecheck: "tsc --noEmit",
  };
  pkg.scripts ??= {};
  for (const [key, command] of Object.entries(scripts)) {
    const current = pkg.scripts[key];
    if (current === undefined || (key === "test" && NPM_INIT_TEST.test(current))) pkg.scripts[key] = command;
    else if (current !== command) kept.push(`scripts.${key} (${JSON.stringify(current)}; plinth init would run ${JSON.stringify(command)})`);
  }
  const own = JSON.parse(readFileSync(join(PLINTH_DIR, "package.json"), "utf8")) as Required<
    Pick<PackageJson, "version" | "dependencies" | "devDependencies">
  >;
  // The versions Plinth itself is built and tested with.
  const dependencies = { plinth: plinthSpec(dir, own.version as string), zod: own.dependencies.zod! };
  const devDependencies = Object.fromEntries(
    ["@types/node", "deno", "tsx", "typescript"].map((dep) => [dep, own.devDependencies[dep] ?? own.dependencies[dep]!]),
  );
  pkg.dependencies = { ...dependencies, ...pkg.dependencies };
  pkg.devDependencies = { ...devDependencies, ...pkg.devDependencies };
  writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
  return { written: ["package.json"], kept };
}

/**
 * How the project depends on Plinth when its package.json does not say: the version, when
 * this Plinth is installed in the project itself; else the folder it runs from (a clone,
 * or an install elsewhere), as a file: dependency.
 */
function plinthSpec(dir: string, version: string): string {
  const inProject = `${join(dir, "node_modules")}${sep}`;
  if (`${PLINTH_DIR}${sep}`.startsWith(inProject)) return version;
  return `file:${relative(dir, PLINTH_DIR) || "."}`;
}

/** What the command prints: what it wrote, and the next steps. */
export function initMessage({ dir, written, kept }: Initialized, cwd: string): string {
  const near = relative(cwd, dir);
  const where = near === "" ? "." : near.startsWith("..") ? dir : near;
  const lines = [`A Plinth plugin project in ${where}: ${written.join(", ")}.`];
  for (const k of kept) lines.push(`kept package.json's ${k}`);
  lines.push(
    "",
    "Next:",
    ...(where === "." ? [] : [`  cd ${where}`]),
    "  npm install",
    "  npm test              # the plugin's tests (node:test); npm run test:deno runs them under Deno",
    "  npx plinth serve      # serves plugin.ts as plinth.yaml says, reloading it when it changes",
  );
  return lines.join("\n");
}
