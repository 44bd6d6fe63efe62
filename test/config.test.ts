import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../server/config/load.ts";
import { root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const parse = (input: unknown) => parseConfig(input, "/etc/plinth");

describe("config", () => {
  it("the README's Configuration block is valid and shows the defaults", () => {
    const readme = readFileSync(`${root}README.md`, "utf8");
    const section = readme.slice(readme.indexOf("## Configuration"), readme.indexOf("## Running on a network"));
    const shown = parse(parseYaml(/```yaml\n([\s\S]+?)```/.exec(section)![1]!));
    const defaults = parse({ plugins: [{ module: "plugins/system-test/mod.ts" }] });
    expect({ ...shown.engine, ...shown.server.limits }).toEqual({ ...defaults.engine, ...defaults.server.limits });
    expect(shown.server.address).toBe(defaults.server.address);
  });

  it("with no file is the embedded default: example plugins, ./data/plinth.db, 127.0.0.1:50051", () => {
    const config = parse(undefined);
    expect(config.server.address).toBe("127.0.0.1:50051");
    expect(config.backend.kind).toBe("sqlite");
    expect(config.backend.path).toBe(`${process.cwd()}/data/plinth.db`);
    expect(config.engine.max_children).toBe(4);
    expect(config.plugins.map((p) => [p.module.replace(/.*\/plugins\//, "plugins/"), p.runtime])).toEqual([
      ["plugins/system-test/mod.ts", "node"],
      ["plugins/iris/mod.ts", "node"],
    ]);
  });

  it("resolves plugin modules against the config file's folder, with their runtime and permissions", () => {
    const config = parse({ plugins: [{ module: "p/mod.ts", runtime: "deno", permissions: { net: ["api.example.com"] } }] });
    expect(config.plugins).toEqual([{ module: "/etc/plinth/p/mod.ts", runtime: "deno", permissions: { net: ["api.example.com"] }, watch: false }]);
  });

  it("resolves backend.path against the config file's folder", () => {
    expect(parse({ backend: { path: "db/p.db" } }).backend.path).toBe("/etc/plinth/db/p.db");
  });

  it.each([
    [{ engine: { max_children: 0 } }, "config engine.max_children: Too small: expected number to be >0, got 0"],
    [{ engine: { sigterm_timeout: "5s" } }, 'config engine.sigterm_timeout: Invalid input: expected number, received string, got "5s"'],
    [{ server: { address: "localhost" } }, 'config server.address: must be host:port, e.g. 127.0.0.1:50051, got "localhost"'],
    [{ plugins: [{ module: "a.ts", runtime: "python" }] }, "config plugins[0].runtime:"],
    [{ plugins: [{ runtime: "node" }] }, "config plugins[0].module:"],
    [{ engnie: {} }, "config engnie: unknown key"],
    [{ backend: { kind: "mysql" } }, "config backend.kind:"],
    [{ backend: { kind: "postgres" } }, "config backend.url: backend.kind postgres needs backend.url"],
    [{ backend: { synchronous: "off" } }, "config backend.synchronous:"],
    [{ backend: { keep_revisions: 0 } }, "config backend.keep_revisions: Too small"],
  ])("rejects %j with a message naming the key", (input, message) => {
    expect(() => parse(input)).toThrow(message);
  });
});

describe("plugins[].module naming an installed package", () => {
  it("resolves the package from the config's folder through its exports, a subpath too, and names what is missing", () => {
    const dir = tempDir();
    const pkg = join(dir, "node_modules/@team/models");
    mkdirSync(join(pkg, "lib"), { recursive: true });
    writeFileSync(
      join(pkg, "package.json"),
      JSON.stringify({ name: "@team/models", type: "module", exports: { ".": { import: "./lib/index.mjs" }, "./extra": "./lib/extra.mjs" } }),
    );
    const config = (module: string) => parseConfig({ plugins: [{ module }] }, dir).plugins[0]!.module;
    expect(config("@team/models")).toBe(join(pkg, "lib/index.mjs"));
    expect(config("@team/models/extra")).toBe(join(pkg, "lib/extra.mjs"));
    expect(() => config("not-installed")).toThrow("config plugins[0].module: not-installed is neither a file in");
    expect(() => config("not-installed")).toThrow("nor a package installed there (npm install not-installed)");
    // A file by that name wins: paths keep working as they are.
    writeFileSync(join(dir, "local.ts"), "");
    expect(config("local.ts")).toBe(join(dir, "local.ts"));
  });
});
