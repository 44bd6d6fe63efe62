/**
 * Another version of this repository, for a benchmark that measures a change turn about
 * with the code from before it: `checkout("HEAD~1")` makes a detached git worktree of
 * that commit in a temporary folder (sharing this checkout's node_modules), removed when
 * the benchmark's process exits.
 */
import { execFileSync } from "node:child_process";
import { symlinkSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir } from "./temp.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

export function checkout(ref: string): string {
  const dir = join(tempDir("plinth-bench-before-"), "checkout");
  execFileSync("git", ["worktree", "add", "--detach", "--quiet", dir, ref], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  process.once("exit", () => {
    // The folder may be gone already (temp.ts removes its folders at exit too): prune then.
    for (const args of [
      ["worktree", "remove", "--force", dir],
      ["worktree", "prune"],
    ]) {
      try {
        execFileSync("git", args, { cwd: root, stdio: "ignore" });
      } catch {}
    }
  });
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"));
  return dir;
}
