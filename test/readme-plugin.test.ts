/**
 * The README's "Writing a plugin" as a newcomer would use it: its plugin and its
 * testPlugin snippet, as written, on Node and on Deno, and its error messages.
 */
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { denoBinary } from "../server/process/runtimes.ts";
import { dataAccess, json, jsonOf } from "./helpers/args.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";
import { tempDir } from "./helpers/temp.ts";

const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("## Writing a plugin"), readme.indexOf("## Configuration"));
// Blocks inside list items are indented: their lines are taken without it.
const blocks = [...section.matchAll(/```(\w*)\n([^`]+?) *```/g)].map((m) => ({ lang: m[1]!, code: m[2]!.replace(/^ {2}/gm, "") }));
const pluginCode = blocks.find((b) => b.code.startsWith("// plugins/mean/mod.ts"))!.code;
const harnessCode = blocks.find((b) => b.code.includes("const h = testPlugin(plugin)"))!.code;
const testFile = blocks.find((b) => b.code.startsWith("// plugins/mean/mod.test.ts"))!.code;
const testCommands = blocks
  .find((b) => b.lang === "sh" && b.code.includes("mod.test.ts"))!
  .code.trim()
  .split("\n");
const errorLines = blocks
  .find((b) => b.code.startsWith("ERROR: Code: InvalidArgument"))!
  .code.trim()
  .split("\n");

// Inside the repository, so that its imports (zod) resolve from node_modules as in a clone;
// the SDK import points where plugins/mean/mod.ts would find it.
const dir = tempDir("readme-plugin-", join(root, "test-artifacts"));
const sdk = (code: string) => code.replaceAll('"../../sdk/', `"${join(root, "sdk")}/`);
writeFileSync(join(dir, "mod.ts"), sdk(pluginCode));
writeFileSync(join(dir, "harness.ts"), sdk(harnessCode));
writeFileSync(join(dir, "mod.test.ts"), sdk(testFile));
// The project's compiler settings, on these three files (and what they import).
writeFileSync(
  join(dir, "tsconfig.json"),
  JSON.stringify({ extends: join(root, "tsconfig.json"), compilerOptions: { skipLibCheck: true }, include: ["*.ts"], exclude: [] }),
);

/** What the snippet prints, as the README's comment lines after it say. */
const expectedOutput = harnessCode
  .split("\n")
  .filter((l) => l.startsWith("// "))
  .map((l) => l.slice(3));

const run = promisify(execFile);

describe("the README's plugin", () => {
  // tsc over the SDK and zod's types: a while on a busy machine.
  it("type-checks as written, its tensors typed by their dtype without a cast", { timeout: 600_000 }, async () => {
    await run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(dir, "tsconfig.json")], { cwd: root }).catch(
      (error: { stdout: string }) => expect.fail(error.stdout),
    );
    expect(pluginCode).toContain('z.custom<Tensor<"float32">>(isTensor("float32"');
    expect(pluginCode).toContain("new Tensor(");
  });

  it("its testPlugin snippet prints what the README says, on Node", async () => {
    const { stdout } = await run(process.execPath, ["--import", "tsx", join(dir, "harness.ts")], { cwd: root });
    expect(stdout.trim().split("\n")).toEqual(expectedOutput);
  });

  it("its testPlugin snippet prints what the README says, on Deno", async () => {
    const { stdout } = await run(denoBinary(), ["run", "--quiet", "--allow-read", "--allow-env", join(dir, "harness.ts")], {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1", DENO_DIR: join(root, "node_modules/.cache/deno") },
    });
    expect(stdout.trim().split("\n")).toEqual(expectedOutput);
  });

  it("its node:test file passes with both commands the README gives", async () => {
    expect(testCommands).toEqual([
      "node --import tsx --test plugins/mean/mod.test.ts",
      "npx deno test --allow-read --allow-env plugins/mean/mod.test.ts",
    ]);
    for (const command of testCommands) {
      const [program, ...args] = command.replace("plugins/mean/mod.test.ts", join(dir, "mod.test.ts")).split(" ");
      const { stdout } = await run(program === "node" ? process.execPath : program!, args, {
        cwd: root,
        env: { ...process.env, NO_COLOR: "1", DENO_DIR: join(root, "node_modules/.cache/deno") },
      });
      expect(stdout).toMatch(/fits the scaled mean of a range, and refuses an empty one/);
      expect(stdout).toMatch(/pass 1|ok \| 1 passed/);
    }
  });

  for (const runtime of ["node", "deno"] as const) {
    describe(`served on ${runtime}`, () => {
      let t: TestServer;
      beforeAll(async () => {
        t = await startTestServer({ plugins: [{ module: join(dir, "mod.ts"), runtime }] });
      });
      afterAll(() => t?.close());

      it("fits on its data access and predicts; bad arguments get the README's messages", async () => {
        const modelId = (await t.engine.createInstance({ modelType: "mean.Model", wait: true })).action!.modelId;
        const fit = (await t.engine.fit({ modelId, args: [dataAccess("mean.range", [json(10)])], kwargs: { scale: json(2) }, wait: true })).action!;
        expect(fit.status).toBe(ActionStatus.SUCCEEDED);
        const predicted = (await t.engine.predict({ modelId, wait: true })).action!;
        expect(jsonOf(predicted.result!.prediction)).toBe(9);
        const message = (line: string) => new RegExp(`^${line.replace(/^.*Message: /, "").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
        await expectStatus(
          t.engine.fit({ modelId, args: [json([1])], kwargs: { scale: json("two") } }),
          Status.INVALID_ARGUMENT,
          message(errorLines[0]!),
        );
        await expectStatus(t.engine.fit({ modelId, args: [dataAccess("mean.range", [json(0)])] }), Status.INVALID_ARGUMENT, message(errorLines[1]!));
        // A misspelt keyword, which zod's z.object would drop.
        await expectStatus(t.engine.fit({ modelId, args: [json([1])], kwargs: { scal: json(2) } }), Status.INVALID_ARGUMENT, message(errorLines[2]!));
      });
    });
  }
});
