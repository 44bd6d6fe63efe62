#!/usr/bin/env node
// The `plinth` command (package.json "bin"). In the installed package (no sources of the
// CLI beside this file) it runs the build, dist/cli/main.mjs; in a clone, cli/main.ts
// through tsx's loader, so that what contributors run is never a stale build.
import { existsSync } from "node:fs";

if (existsSync(new URL("./main.ts", import.meta.url))) {
  const { register } = await import("tsx/esm/api");
  register();
  await import("./main.ts");
} else {
  await import("../dist/cli/main.mjs");
}
