/**
 * Node plugins under Node's permission model: `permissions.read` and `write` enforced
 * the way Deno enforces them, a denial naming the config key that allows it, and what
 * Node 20 cannot enforce refused at start.
 */
import { readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { parseConfig } from "../server/config/load.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

let t: TestServer;
let modelId: string;
const allowed = tempDir("plinth-allowed-");
const writable = tempDir("plinth-writable-");
const elsewhere = tempDir("plinth-elsewhere-");

/**
 * A plugin in a folder of its own that reads what it is told to, beside symlinks that
 * lead out of what it may read: one to a file (a database, say), one to a folder.
 */
function linkedPlugin(name: string): string {
  const dir = tempDir(`plinth-${name}-`);
  writeFileSync(
    join(dir, "mod.ts"),
    `import { readFileSync } from "node:fs";
import { defineModel, definePlugin } from ${JSON.stringify(join(root, "sdk/mod.ts"))};
export default definePlugin({
  name: ${JSON.stringify(name)},
  models: { ${JSON.stringify(`${name}.Model`)}: defineModel({ instantiate: () => ({}), predict: (_ctx, _m, _a, kwargs) => readFileSync(String(kwargs.read), "utf8") }) },
});
`,
  );
  writeFileSync(join(dir, "own.txt"), "its own file");
  symlinkSync(join(elsewhere, "secret.txt"), join(dir, "db"));
  symlinkSync(elsewhere, join(dir, "elsewhere"));
  return join(dir, "mod.ts");
}

const linked: Record<string, string> = { linked_node: linkedPlugin("linked_node"), linked_deno: linkedPlugin("linked_deno") };

beforeAll(async () => {
  writeFileSync(join(allowed, "data.txt"), "allowed data");
  writeFileSync(join(elsewhere, "secret.txt"), "secret");
  t = await startTestServer({
    plugins: [
      { module: fixture("files.ts"), runtime: "node", permissions: { read: [allowed, writable], write: [writable] } },
      { module: fixture("files-deno.ts"), runtime: "deno", permissions: { read: [allowed] } },
      { module: linked.linked_node, runtime: "node", permissions: {} },
      { module: linked.linked_deno, runtime: "deno", permissions: {} },
    ],
  });
  modelId = (await t.engine.createInstance({ modelType: "files.Model", wait: true })).action!.modelId;
});
afterAll(() => t?.close());

const predict = async (kwargs: Record<string, string>) =>
  (await t.engine.predict({ modelId, kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, json(v)])), wait: true })).action!;

describe("a Node plugin with permissions", () => {
  it("reads what permissions.read lists and writes what permissions.write lists", async () => {
    const read = await predict({ read: join(allowed, "data.txt") });
    expect(read.error?.message ?? "").toBe("");
    expect(jsonOf(read.result!.prediction)).toBe("allowed data");
    const target = join(writable, "out.txt");
    const wrote = await predict({ write: target, read: target });
    expect(jsonOf(wrote.result!.prediction)).toBe("written by a plugin");
    expect(readFileSync(target, "utf8")).toBe("written by a plugin");
  });

  it("is denied anything else, with the key that would allow it", async () => {
    const secret = join(elsewhere, "secret.txt");
    const read = await predict({ read: secret });
    expect(read.status).toBe(ActionStatus.FAILED);
    expect(read.error?.code).toBe("plugin_error");
    expect(read.error?.message).toBe(
      `Error: Access to this API has been restricted: FileSystemRead of "${secret}" (allow it with plugins[0].permissions.read: ["${secret}"])`,
    );
    const outside = join(elsewhere, "new.txt");
    const wrote = await predict({ write: outside });
    expect(wrote.error?.message).toContain(`FileSystemWrite of "${outside}" (allow it with plugins[0].permissions.write: ["${outside}"])`);
    expect(() => readFileSync(outside)).toThrow(/ENOENT/);
  });
});

describe("a Deno plugin with permissions", () => {
  it("is denied what they do not list, with the key that would allow it", async () => {
    const id = (await t.engine.createInstance({ modelType: "files_deno.Model", wait: true })).action!.modelId;
    const secret = join(elsewhere, "secret.txt");
    const read = (await t.engine.predict({ modelId: id, kwargs: { read: json(secret) }, wait: true })).action!;
    expect(read.status).toBe(ActionStatus.FAILED);
    expect(read.error?.message).toMatch(
      new RegExp(`Requires read access to "${secret}".*\\(allow it with plugins\\[1\\]\\.permissions\\.read: \\["${secret}"\\]\\)$`),
    );
  });
});

describe("a symlink in a plugin's folder that leads out of what it may read", () => {
  it.each([
    ["Node", "linked_node", 2],
    ["Deno", "linked_deno", 3],
  ])("is denied on %s, naming where it leads; the folder's other files are read", async (_runtime, name, index) => {
    const id = (await t.engine.createInstance({ modelType: `${name}.Model`, wait: true })).action!.modelId;
    const read = async (path: string) => (await t.engine.predict({ modelId: id, kwargs: { read: json(path) }, wait: true })).action!;
    const folder = dirname(linked[name]!);
    const own = await read(join(folder, "own.txt"));
    expect(own.error?.message ?? "").toBe("");
    expect(jsonOf(own.result!.prediction)).toBe("its own file");
    const secret = join(elsewhere, "secret.txt");
    for (const path of [join(folder, "db"), join(folder, "elsewhere/secret.txt")]) {
      const denied = await read(path);
      expect(denied.status).toBe(ActionStatus.FAILED);
      expect(denied.error?.message).toContain(`"${path}"`);
      expect(denied.error?.message).toMatch(
        new RegExp(`\\(a symlink to "${secret}": allow that with plugins\\[${index}\\]\\.permissions\\.read: \\["${secret}"\\]\\)$`),
      );
    }
  });
});

describe("what Node cannot enforce", () => {
  it("is refused at start, naming the key", () => {
    for (const name of ["net", "env", "run"]) {
      expect(() => parseConfig({ plugins: [{ module: fixture("files.ts"), permissions: { [name]: ["x"] } }] }, root)).toThrow(
        new RegExp(`^config plugins\\[0\\]\\.permissions\\.${name}: .*; remove it, or use runtime: deno, which enforces it`),
      );
    }
    // On Deno they are fine.
    expect(() => parseConfig({ plugins: [{ module: fixture("files.ts"), runtime: "deno", permissions: { net: ["x"] } }] }, root)).not.toThrow();
  });
});
