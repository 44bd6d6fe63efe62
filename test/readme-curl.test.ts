/** The README's curl examples, run as written (with the test server's port) by the real curl. */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";

const run = promisify(execFile);
const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("### Over HTTP"), readme.indexOf("### From Python"));
const commands = /```sh\n([^`]+)```/
  .exec(section)![1]!
  .replace(/\\\n\s*/g, "")
  .split("\n")
  .filter((line) => line.startsWith("curl "));

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ http: { address: "127.0.0.1:0" } });
});
afterAll(() => t?.close());

describe("the README's curl examples", () => {
  it("list the plugins, create a model and get the Connect error JSON for a missing one", async () => {
    expect(commands).toHaveLength(3);
    const answers = [];
    for (const command of commands) {
      const { stdout } = await run("sh", ["-c", command.replaceAll("127.0.0.1:8080", `127.0.0.1:${t.server.httpPort}`)]);
      answers.push(JSON.parse(stdout));
    }
    expect(answers[0].plugins.map((p: { name: string }) => p.name)).toEqual(["systest", "iris"]);
    expect(answers[1].action.status).toBe("ACTION_STATUS_SUCCEEDED");
    expect(answers[2]).toEqual({ code: "not_found", message: "model m-none not found" });
    expect(section).toContain('# {"code":"not_found","message":"model m-none not found"}');
  });
});
