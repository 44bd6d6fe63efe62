/**
 * What to do when a Node plugin's file loads as CommonJS and cannot be one: a
 * package.json above it says `"type": "commonjs"` (what `npm init -y` writes), so tsx
 * compiles it to CommonJS, where top-level await does not exist.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";

/** The nearest package.json above `file`, and its type. */
function packageScope(file: string): { path: string; type: unknown } | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const path = join(dir, "package.json");
    if (existsSync(path)) {
      try {
        return { path, type: (JSON.parse(readFileSync(path, "utf8")) as { type?: unknown }).type };
      } catch {
        return undefined;
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/**
 * `message` with, when it is esbuild's refusal of top-level await in CommonJS, the
 * package.json that made the file CommonJS. Paths in messages are relative to `base`
 * when under it (what clients see).
 */
export function formatHint(message: string, base = ""): string {
  const found = /([^\s:]+):\d+:\d+: ERROR: Top-level await is currently not supported with the "cjs" output format/.exec(message);
  if (!found) return message;
  const scope = packageScope(resolve(base, found[1]!));
  if (scope?.type !== "commonjs") return message;
  const shown = base && !isAbsolute(found[1]!) ? relative(base, scope.path) : scope.path;
  return `${message} (${shown} says "type": "commonjs", so the file loads as CommonJS: make it "module", or name the file .mts)`;
}
