/**
 * A Node plugin runs built by the server into one JavaScript module (no TypeScript loader
 * in its child), and behaves as its files do where they are: each file's own
 * import.meta.url and __dirname, the packages of its own node_modules, the SDK the plugin
 * thread shares (a Tensor it makes is a tensor), stack traces naming its files. What a
 * bundle cannot do as the files would loads through tsx, as before.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { Tensor } from "../sdk/mod.ts";
import { json, jsonOf, tensorArg, tensorOf } from "./helpers/args.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const sdk = JSON.stringify(join(root, "sdk/mod.ts"));

/** Writes `files` (relative path → text) under a new folder; its path. */
function folder(files: Record<string, string>): string {
  const dir = tempDir("plinth-bundle-");
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const located = folder({
  "plugin.ts": `import { defineModel, definePlugin, Tensor } from ${sdk};
import { where, scale } from "./lib/where.ts";
import { greet } from "greeter";
import helper from "./lib/helper.cjs";

// Not computed imports: a method named import, and the words in a string.
class Rows { import(rows: number[]) { return rows.length; } }
const hint = "call import(x) to load";
export default definePlugin({
  name: "located",
  models: {
    "located.Model": defineModel({
      instantiate: () => ({}),
      predict: (_ctx, _model, args, kwargs) => {
        if (kwargs.mode === "where") return { ...where(), greeting: greet("plinth"), helper: helper(), rows: new Rows().import([1, 2]), hint };
        if (kwargs.mode === "throw") throw new Error("thrown on purpose");
        if (kwargs.mode === "pid") return process.pid;
        const input = args[0];
        if (!(input instanceof Tensor) || !input.is("float32")) throw new Error("expected a float32 tensor");
        return new Tensor("float32", input.shape, input.data.map((x) => x * scale));
      },
    }),
  },
});
`,
  "lib/where.ts": `import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
export const scale: number = JSON.parse(readFileSync(new URL("./scale.json", import.meta.url), "utf8")).scale;
export function where() {
  const meta = import.meta;
  return { url: import.meta.url, file: fileURLToPath(import.meta.url), dirname: import.meta.dirname, held: meta.url };
}
`,
  // CommonJS beside it, requiring built-ins (no package): a bundle's require() must still work.
  "lib/helper.cjs": `const os = require("node:os");
const { existsSync } = require("fs");
module.exports = () => ({ dir: __dirname, cores: os.cpus().length > 0, here: existsSync(__filename) });
`,
  "lib/scale.json": JSON.stringify({ scale: 3 }),
  // A package of the plugin's own, which Plinth's node_modules does not have.
  "node_modules/greeter/package.json": JSON.stringify({ name: "greeter", type: "module", exports: "./index.js" }),
  "node_modules/greeter/index.js": `export const greet = (name) => "hello " + name + " from " + import.meta.url;\n`,
});

const computed = folder({
  // A computed import: a bundle would resolve it from the wrong folder, so this one loads through tsx.
  "plugin.ts": `import { defineModel, definePlugin } from ${sdk};
const name = ["./other", "ts"].join(".");
const { answer } = await import(name);
export default definePlugin({
  name: "computed",
  models: { "computed.Model": defineModel({ instantiate: () => ({}), predict: () => ({ answer, pid: process.pid }) }) },
});
`,
  "other.ts": "export const answer: number = 42;\n",
});

// A plugin installed as a package (module: "@team/models" resolves into node_modules), in two files.
const packaged = folder({
  "node_modules/@team/models/package.json": JSON.stringify({ name: "@team/models", type: "module", exports: "./index.mjs" }),
  "node_modules/@team/models/index.mjs": `import { models } from "./models.mjs";
import { definePlugin } from ${sdk};
export default definePlugin({ name: "packaged", models });
`,
  "node_modules/@team/models/models.mjs": `import { defineModel } from ${sdk};
export const models = { "packaged.Model": defineModel({ instantiate: () => ({}), predict: () => process.pid }) };
`,
});

// Under the permission model, a plugin that imports a file it may not read.
const secret = join(folder({ "secret.json": JSON.stringify({ password: "hunter2" }) }), "secret.json");
const restricted = folder({
  "plugin.ts": `import { defineModel, definePlugin } from ${sdk};
import secret from ${JSON.stringify(secret)} with { type: "json" };
export default definePlugin({
  name: "restricted",
  models: { "restricted.Model": defineModel({ instantiate: () => ({}), predict: () => secret }) },
});
`,
});

let t: TestServer;
let bundleFolder: string | undefined;
const modelOf = async (modelType: string) => (await t.engine.createInstance({ modelType, wait: true })).action!.modelId;
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
beforeAll(async () => {
  t = await startTestServer({
    engine: { max_children: 2 },
    plugins: [
      { module: join(located, "plugin.ts") },
      { module: join(computed, "plugin.ts") },
      { module: join(packaged, "node_modules/@team/models/index.mjs") },
    ],
  });
});
afterAll(async () => {
  await t?.close();
  // The server's folder of built plugins goes with it.
  expect(bundleFolder && existsSync(bundleFolder)).toBe(false);
});

describe("a Node plugin built by the server", () => {
  it("keeps each file's own import.meta and finds its data and its own packages from where it is", async () => {
    const modelId = await modelOf("located.Model");
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("where") }, wait: true })).action!;
    expect(action.error?.message ?? "").toBe("");
    expect(jsonOf(action.result?.prediction)).toEqual({
      url: `file://${join(located, "lib/where.ts")}`,
      file: join(located, "lib/where.ts"),
      dirname: join(located, "lib"),
      held: `file://${join(located, "lib/where.ts")}`,
      greeting: `hello plinth from file://${join(located, "node_modules/greeter/index.js")}`,
      helper: { dir: join(located, "lib"), cores: true, here: true },
      rows: 2,
      hint: "call import(x) to load",
    });
  });

  it("shares the SDK with its thread: a tensor in is a Tensor, a Tensor out is a tensor", async () => {
    const modelId = await modelOf("located.Model");
    const input = new Tensor("float32", [2], new Float32Array([1, 2]));
    const action = (await t.engine.predict({ modelId, args: [tensorArg(input)], wait: true })).action!;
    expect(action.error?.message ?? "").toBe("");
    expect([...tensorOf(action.result?.prediction, "float32").data]).toEqual([3, 6]);
  });

  it("names the plugin's file and line in a stack trace, not the built module", async () => {
    const modelId = await modelOf("located.Model");
    const action = (await t.engine.predict({ modelId, kwargs: { mode: json("throw") }, wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.message).toContain("thrown on purpose");
    const frames = (action.error?.stack ?? "").split("\n").filter((line) => line.trimStart().startsWith("at "));
    const line =
      readFileSync(join(located, "plugin.ts"), "utf8")
        .split("\n")
        .findIndex((text) => text.includes("thrown on purpose")) + 1;
    expect(frames[0]).toContain(`${join(located, "plugin.ts")}:${line}:`);
    expect(frames.filter((frame) => frame.includes(".cache/plinth/plugins"))).toEqual([]);
  });

  it("runs with no TypeScript loader: the child's command is the built code", async () => {
    const modelId = await modelOf("located.Model");
    const pid = jsonOf((await t.engine.predict({ modelId, kwargs: { mode: json("pid") }, wait: true })).action!.result?.prediction);
    const args = cmdline(pid as number);
    expect(args.filter((arg) => arg.includes(".cache/plinth/node-child-"))).toHaveLength(1);
    expect(args.some((arg) => arg.includes("tsx"))).toBe(false);
    // The plugin built into a folder of the server's own, outside node_modules (which a
    // plugin under the permission model may read), for its user only.
    const bundle = args.find((arg) => arg.startsWith(join(tmpdir(), "plinth-plugins-")));
    expect(bundle).toMatch(/\/[0-9a-f]{16}\.mjs$/);
    bundleFolder = dirname(bundle!);
    expect(statSync(bundleFolder).mode & 0o777).toBe(0o700);
  });

  it("builds a plugin that is a package of its own, its files and all", async () => {
    const modelId = await modelOf("packaged.Model");
    const pid = jsonOf((await t.engine.predict({ modelId, wait: true })).action!.result?.prediction) as number;
    expect(cmdline(pid).some((arg) => arg.includes("tsx"))).toBe(false);
  });

  it("does not build a plugin under the permission model: what it imports, it must be allowed to read", async () => {
    const started = startTestServer({ plugins: [{ module: join(restricted, "plugin.ts"), permissions: { read: [] } }] });
    await expect(started).rejects.toThrow(/FileSystemRead.*secret\.json/s);
  });

  it("loads through tsx when it imports a computed name, which a bundle would resolve from the wrong folder", async () => {
    const modelId = await modelOf("computed.Model");
    const action = (await t.engine.predict({ modelId, wait: true })).action!;
    const { answer, pid } = jsonOf(action.result?.prediction) as { answer: number; pid: number };
    expect(answer).toBe(42);
    expect(cmdline(pid).some((arg) => arg.includes("tsx"))).toBe(true);
  });
});
