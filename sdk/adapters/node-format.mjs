// A module-resolution hook of the plugin thread on Node (registered by node-thread.mjs,
// after tsx's, so that it sees what tsx resolved). A plugin's own files are ES modules,
// as on Deno, wherever they are: Node takes a `.ts` or `.js` file for CommonJS unless a
// package.json above it says `"type": "module"`, and a folder a user makes for a plugin
// usually has none (tsx's ESM hooks then hand the file to the CommonJS loader, which
// fails with "Cannot require() ES Module … in a cycle", and a CommonJS build of it
// could not use top-level await). So where no package.json gives a type:
// - a `.ts`/`.tsx` file is loaded as an ES module;
// - a `.js` file gets no format from here, and Node tells from its syntax (import and
//   export make it an ES module, as Node does without tsx).
// A package.json that says `"type": "commonjs"`, `.cts`/`.cjs` files and packages in
// node_modules keep Node's own rules.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The `type` of the package.json nearest to a folder ("" when it has none or there is none), by folder. */
const types = new Map();

/**
 * Whether a file is there to read. Under the permission model Node 20's existsSync
 * throws for a path the plugin may not read; the server allows every package.json
 * there is above the plugin, so one it may not read is one that does not exist.
 */
function readable(file) {
  try {
    return existsSync(file);
  } catch {
    return false;
  }
}

function scopeType(dir) {
  let type = types.get(dir);
  if (type !== undefined) return type;
  const file = join(dir, "package.json");
  if (readable(file)) {
    try {
      const declared = JSON.parse(readFileSync(file, "utf8")).type;
      type = typeof declared === "string" ? declared : "";
    } catch {
      type = "";
    }
  } else type = dirname(dir) === dir ? "" : scopeType(dirname(dir));
  types.set(dir, type);
  return type;
}

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (resolved.format !== "commonjs" || !resolved.url.startsWith("file:")) return resolved;
  const path = fileURLToPath(resolved.url);
  const ts = /\.tsx?$/.test(path);
  if ((!ts && !path.endsWith(".js")) || path.includes("/node_modules/") || scopeType(dirname(path)) !== "") return resolved;
  return { ...resolved, format: ts ? "module" : undefined };
}
