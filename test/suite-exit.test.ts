/**
 * `npm test` fails when a test fails: a run of a suite that fails, with this project's
 * vitest config (its global PostgreSQL setup included), exits non-zero. A library once
 * turned such runs into successes by exiting 0 from its own exit hook.
 */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);

describe("the test run's exit code", () => {
  it("is non-zero when a test fails", async () => {
    const config = join(tempDir(), "vitest.config.ts");
    writeFileSync(
      config,
      `import base from ${JSON.stringify(join(root, "vitest.config.ts"))};\nexport default { ...base, test: { ...base.test, include: ["test/fixtures/failing/*.check.ts"] } };\n`,
    );
    const result = await run("npx", ["vitest", "run", "--root", root, "--config", config], { cwd: root }).then(
      () => ({ code: 0, stdout: "" }),
      (e: { code: number; stdout: string }) => e,
    );
    expect(result.stdout).toContain("1 failed");
    expect(result.code).toBe(1);
  });
});
