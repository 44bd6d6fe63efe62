/**
 * The README's Python section, run as written: its shell command generates the stubs,
 * its program calls a real server. Python needs grpcio and grpcio-tools (Debian:
 * python3-grpcio python3-grpc-tools); .ci/run installs them.
 */
import { execFile } from "node:child_process";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("### From Python"), readme.indexOf("### Arguments"));
const shell = /```sh\n([^`]+)```/.exec(section)![1]!.trim();
const program = /```python\n([^`]+)```/.exec(section)![1]!;

/** Debian's python3 first: the one on PATH may be a pyenv build without Debian's packages. */
const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH}` };

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

describe("the README's Python client", () => {
  it("generates its stubs outside gen/ and gets a prediction from the Iris model", async () => {
    const missing = await run("python3", ["-c", "import grpc, grpc_tools"], { env }).then(
      () => "",
      (e: { stderr: string }) => e.stderr,
    );
    expect(missing, "python3 needs grpcio and grpcio-tools: apt-get install python3-grpcio python3-grpc-tools").toBe("");
    // A copy of the repository's proto files: the command runs as written, in its folder.
    const dir = tempDir();
    cpSync(join(root, "proto"), join(dir, "proto"), { recursive: true });
    expect(shell).not.toContain("gen");
    await run("sh", ["-c", shell], { cwd: dir, env });
    writeFileSync(join(dir, "client.py"), program.replace("localhost:50051", `127.0.0.1:${t.port}`));
    const { stdout } = await run("python3", ["client.py"], { cwd: dir, env });
    expect(stdout).toMatch(/^accuracy: 0\.9\d+\nspecies: \['setosa', 'virginica'\]\n$/);
    expect(program).toContain("# species: ['setosa', 'virginica']");
  });
});
