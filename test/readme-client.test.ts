/** The README's TypeScript client example, run as written against a real server. */
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("### From TypeScript"), readme.indexOf("### Arguments"));
const program = /```ts\n([^`]+)```/.exec(section)![1]!;

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

describe("the README's TypeScript client", () => {
  it("trains the Iris model, following the fit, and predicts two flowers", async () => {
    // The program as written, but for the server's port and where the client module is.
    const dir = tempDir();
    writeFileSync(join(dir, "package.json"), '{ "type": "module" }'); // as in the repository's folder
    const file = join(dir, "iris.ts");
    writeFileSync(file, program.replace("127.0.0.1:50051", `127.0.0.1:${t.port}`).replace("./client/mod.ts", join(root, "client/mod.ts")));
    const { stdout } = await run(process.execPath, ["--import", "tsx", file], { cwd: root });
    const lines = stdout.trim().split("\n");
    expect(lines.at(-2)).toMatch(/^accuracy: 0\.9\d+$/);
    expect(lines.at(-1)).toBe("species: [ 'setosa', 'virginica' ]");
    expect(lines).toContain("succeeded succeeded succeeded");
    expect(lines.some((l) => l.startsWith("accessing_data "))).toBe(true);
    expect(program).toContain("// species: [ 'setosa', 'virginica' ]");
  });

  it("embeds a server with plinth/server, trains and predicts through it, and stops it", async () => {
    const embedded = [...section.matchAll(/```ts\n([^`]*(?:`[^`]+`[^`]*)*)```/g)]
      .map((m) => m[1]!)
      .find((code) => code.startsWith("// embedded.ts"))!;
    // Run where a user would, in a folder of its own (its data/ goes there), the modules found in the repository.
    const dir = tempDir();
    writeFileSync(join(dir, "package.json"), '{ "type": "module" }');
    const file = join(dir, "embedded.ts");
    writeFileSync(file, embedded.replace("./client/mod.ts", join(root, "client/mod.ts")).replace("./server/mod.ts", join(root, "server/mod.ts")));
    const tsx = pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href;
    const { stdout } = await run(process.execPath, ["--import", tsx, file], { cwd: dir });
    expect(stdout.split("\n")).toContain("species: [ 'setosa' ]");
    expect(embedded).toContain("// species: [ 'setosa' ]");
    expect(JSON.parse(stdout.trim().split("\n").at(-1)!).msg).toBe("stopped");
  });
});
