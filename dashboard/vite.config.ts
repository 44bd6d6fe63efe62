// The dashboard's build: `npm run build:dashboard` (and `npm install`, through prepare)
// writes dashboard/dist, which the server's HTTP listener serves.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  logLevel: "warn",
});
