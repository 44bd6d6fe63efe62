/**
 * Plinth's own folder (where its package.json is), found from this module: the same
 * answer from the sources (server/…) and from a build whose code is split into chunks
 * (where no module's import.meta.url says where it sits in the source tree). The SDK's
 * sources, the generated code, the dashboard and the example plugins are found from it.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

const here = dirname(fileURLToPath(import.meta.url));
export const PLINTH_DIR = packageRoot(here);
/** Whether this code is the package's build (dist/, `npm run build`) rather than the sources run through tsx. */
export const BUILT = here.startsWith(join(PLINTH_DIR, "dist"));
