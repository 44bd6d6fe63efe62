// What dist/ is built from (scripts/build.mjs), as one hash: the build records it once it
// is done, and a test that needs dist/ as the sources make it (package.test.ts) builds it
// again only when they changed since.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

const FOLDERS = ["cli", "server", "client", "sdk", "gen", "types"];
// The lock file too: the declarations depend on the packages' types, and the output on
// esbuild's and TypeScript's versions, which an npm install changes without a build.
const FILES = ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "scripts/build.mjs", "scripts/build-sources.mjs"];

/** Where the last build's hash is kept: beside the other caches, not in the package. */
export const STAMP = "node_modules/.cache/plinth/dist-sources.sha256";

/** The hash of the build's sources, under `root`. */
export function sourcesHash(root = ".") {
  const hash = createHash("sha256");
  const files = [...FILES];
  for (const folder of FOLDERS) {
    for (const entry of readdirSync(join(root, folder), { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) files.push(join(relative(root, entry.parentPath), entry.name));
    }
  }
  for (const file of files.sort())
    hash
      .update(file)
      .update("\0")
      .update(readFileSync(join(root, file)))
      .update("\0");
  return hash.digest("hex");
}

/** Whether dist/ was built from the sources as they are now. */
export function distIsFresh(root = ".") {
  const stamp = join(root, STAMP);
  return existsSync(join(root, "dist")) && existsSync(stamp) && readFileSync(stamp, "utf8") === sourcesHash(root);
}
