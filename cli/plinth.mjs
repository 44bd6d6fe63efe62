#!/usr/bin/env node
// The `plinth` command (package.json "bin"): runs cli/main.ts with tsx's loader, in this process.
import { register } from "tsx/esm/api";

register();
await import("./main.ts");
