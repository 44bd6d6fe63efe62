/**
 * A plugin loads wherever its file is — a folder a user makes outside Plinth's, with or
 * without a package.json — as an ES module (top-level await, import.meta), on Node and
 * Deno; what cannot load says why and what to do.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

/** The SDK as a user outside the clone imports it today: by absolute path. */
const sdk = join(root, "sdk/mod.ts");

/** A plugin whose description comes from a top-level await and names the URL it was loaded from. */
const esmPlugin = (name: string) => `import { defineModel, definePlugin } from ${JSON.stringify(sdk)};
const loaded = await Promise.resolve("an ES module");
export default definePlugin({
  name: ${JSON.stringify(name)},
  description: loaded + " at " + new URL(import.meta.url).pathname,
  models: { ${JSON.stringify(`${name}.Model`)}: defineModel({ instantiate: () => ({}), predict: () => ${JSON.stringify(name)} }) },
});
`;

/** A folder of its own outside the clone, with the plugin file and, when given, a package.json. */
function pluginFolder(name: string, file: string, source: string, packageJson?: object): string {
  const dir = join(tempDir(`plinth-user-${name}-`));
  mkdirSync(dir, { recursive: true });
  if (packageJson) writeFileSync(join(dir, "package.json"), JSON.stringify(packageJson));
  writeFileSync(join(dir, file), source);
  return join(dir, file);
}

interface Case {
  name: string;
  runtime: "node" | "deno";
  file: string;
  packageJson?: object;
}

const cases: Case[] = [];
for (const runtime of ["node", "deno"] as const) {
  for (const ext of ["ts", "mts", "js", "mjs"]) {
    cases.push({ name: `${runtime}_${ext}_bare`, runtime, file: `mod.${ext}` });
  }
  for (const ext of ["ts", "js"]) cases.push({ name: `${runtime}_${ext}_module`, runtime, file: `mod.${ext}`, packageJson: { type: "module" } });
}
// What `npm init -y` writes (npm 11): TypeScript with ES syntax loads, but as CommonJS, so without top-level await.
const commonJs = `import { defineModel, definePlugin } from ${JSON.stringify(sdk)};
export default definePlugin({ name: "node_ts_commonjs", description: "CommonJS", models: { "node_ts_commonjs.Model": defineModel({ instantiate: () => ({}), predict: () => 1 }) } });
`;

/** The same plugin importing the SDK by its package's name, from a folder with no package.json and no node_modules. */
const byName = (name: string) => esmPlugin(name).replace(JSON.stringify(sdk), JSON.stringify("plinth/sdk"));
const byNameCases = [
  { name: "node_by_name", runtime: "node" as const, source: byName("node_by_name") },
  { name: "deno_by_name", runtime: "deno" as const, source: byName("deno_by_name") },
  { name: "deno_by_npm_name", runtime: "deno" as const, source: byName("deno_by_npm_name").replace('"plinth/sdk"', '"npm:plinth/sdk"') },
];

let t: TestServer;
const modules = new Map<string, string>();
beforeAll(async () => {
  const plugins = cases.map((c) => {
    const module = pluginFolder(c.name, c.file, esmPlugin(c.name), c.packageJson);
    modules.set(c.name, module);
    return { module, runtime: c.runtime };
  });
  plugins.push({ module: pluginFolder("commonjs", "mod.ts", commonJs, { name: "my-plugin", type: "commonjs" }), runtime: "node" });
  for (const c of byNameCases) {
    modules.set(c.name, pluginFolder(c.name, "mod.ts", c.source));
    plugins.push({ module: modules.get(c.name)!, runtime: c.runtime });
  }
  modules.set("tla_cjs_built", pluginFolder("tla-cjs-built", "mod.ts", esmPlugin("tla_cjs_built"), { type: "commonjs" }));
  plugins.push({ module: modules.get("tla_cjs_built")!, runtime: "node" });
  t = await startTestServer({ engine: { min_idle_workers: 0 }, plugins });
});
afterAll(() => t?.close());

describe("a plugin in a folder of its own outside Plinth's", () => {
  it("loads as an ES module on Node and Deno, whatever its extension, with or without a package.json", async () => {
    const listed = new Map((await t.engine.listPlugins({})).plugins.map((p) => [p.name, p]));
    for (const c of cases) {
      expect(listed.get(c.name)?.runtime, c.name).toBe(c.runtime);
      expect(listed.get(c.name)?.description, c.name).toBe(`an ES module at ${modules.get(c.name)}`);
    }
    expect(listed.get("node_ts_commonjs")?.description).toBe("CommonJS");
  });

  it("loads with top-level await in a CommonJS package too: the server builds it as one ES module", async () => {
    const listed = (await t.engine.listPlugins({})).plugins.find((p) => p.name === "tla_cjs_built");
    expect(listed?.description).toBe(`an ES module at ${modules.get("tla_cjs_built")}`);
  });

  it("imports the SDK as plinth/sdk (Deno: npm:plinth/sdk too) with no package.json or node_modules there", async () => {
    const listed = new Map((await t.engine.listPlugins({})).plugins.map((p) => [p.name, p]));
    for (const c of byNameCases) {
      expect(listed.get(c.name)?.runtime, c.name).toBe(c.runtime);
      expect(listed.get(c.name)?.description, c.name).toBe(`an ES module at ${modules.get(c.name)}`);
      const modelId = (await t.engine.createInstance({ modelType: `${c.name}.Model`, wait: true })).action!.modelId;
      const predicted = (await t.engine.predict({ modelId, wait: true })).action!;
      expect(predicted.result?.prediction, c.name).toMatchObject({ kind: { case: "json" } });
    }
  });

  it("serves calls from there", async () => {
    for (const name of ["node_ts_bare", "deno_ts_bare"]) {
      const modelId = (await t.engine.createInstance({ modelType: `${name}.Model`, wait: true })).action!.modelId;
      const predicted = (await t.engine.predict({ modelId, wait: true })).action!;
      expect(predicted.error?.message ?? "").toBe("");
    }
  });
});

describe("a plugin that cannot load", () => {
  it("top-level await in a CommonJS package, loading through tsx: the error names the package.json that makes it one", async () => {
    // A computed import keeps the server from building the plugin (test/plugin-bundle.test.ts): tsx loads it, by Node's rules.
    const source = `await import(["node", "fs"].join(":"));\n${esmPlugin("tla_cjs")}`;
    const module = pluginFolder("tla-cjs", "mod.ts", source, { type: "commonjs" });
    await expect(startTestServer({ plugins: [{ module }] })).rejects.toThrow(
      /^config plugins\[0\]\.module: plugin .*mod\.ts failed to load: .*Top-level await is currently not supported with the "cjs" output format \(.*\/package\.json says "type": "commonjs", so the file loads as CommonJS: make it "module", or name the file \.mts\)/s,
    );
  });
});
