/**
 * Where a server writes the plugins it builds (plugin-bundle.ts): a folder of its own in
 * the system's temporary folder, readable by its user only, removed when it stops. Not
 * under node_modules, which every plugin under the permission model may read: a bundle
 * holds its plugin's code and the data files it imports.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processAlive } from "./proc.ts";

const PREFIX = "plinth-plugins-";

export class BundleFolder {
  #path: string | undefined;

  /** The folder, made at the first call; the folders of servers that died without removing theirs go then. */
  get path(): string {
    if (this.#path) return this.#path;
    for (const name of readdirSync(tmpdir())) {
      const pid = Number(new RegExp(`^${PREFIX}(\\d+)-`).exec(name)?.[1]);
      if (pid && pid !== process.pid && !processAlive(pid)) rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
    this.#path = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
    return this.#path;
  }

  remove(): void {
    if (this.#path) rmSync(this.#path, { recursive: true, force: true });
    this.#path = undefined;
  }
}
