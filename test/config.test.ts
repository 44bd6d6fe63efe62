import { once } from "node:events";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../server/config/load.ts";
import { residentMb } from "../server/config/schema.ts";
import { childCommand } from "../server/process/runtimes.ts";
import { root } from "./helpers/server.ts";
import { clients, startProcess, writeConfig } from "./helpers/server-process.ts";
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

  it("resolves the folders a plugin may read and write against the config file's folder too", () => {
    const config = parse({
      plugins: [{ module: "p/mod.ts", permissions: { read: ["../data/models", "/srv/x"], write: ["scratch"], addons: true } }],
    });
    expect(config.plugins[0]!.permissions).toEqual({ read: ["/etc/data/models", "/srv/x"], write: ["/etc/plinth/scratch"], addons: true });
  });

  it("plugins[].resident_mb is 256 by default, half of max_memory_mb when that is set, 0 for none, and goes to the child in bytes", () => {
    const budget = (plugin: Record<string, unknown>) => residentMb(parse({ plugins: [{ module: "a.ts", ...plugin }] }).plugins[0]!);
    expect([budget({}), budget({ max_memory_mb: 300 }), budget({ resident_mb: 0 }), budget({ max_memory_mb: 300, resident_mb: 100 })]).toEqual([
      256, 150, 0, 100,
    ]);
    const settings = { maxFrameBytes: 1000, progressIntervalMs: 50, denoDir: "/tmp/deno", denoBinary: "/bin/deno" };
    const node = childCommand({ module: "/p/a.ts", runtime: "node", residentMb: 1.5, maxMemoryMb: 512 }, settings).args;
    expect(node.slice(node.indexOf("/p/a.ts"))).toEqual(["/p/a.ts", "1000", "50", String(1.5 * 2 ** 20), "384"]);
    const deno = childCommand({ module: "/p/a.ts", runtime: "deno", residentMb: 0 }, settings).args;
    expect(deno.slice(deno.indexOf("/p/a.ts"))).toEqual(["/p/a.ts", "1000", "50", "0"]);
  });

  it("resolves backend.path against the config file's folder", () => {
    expect(parse({ backend: { path: "db/p.db" } }).backend.path).toBe("/etc/plinth/db/p.db");
  });

  it.each([
    [{ engine: { max_children: 0 } }, "config engine.max_children: Too small: expected number to be >0, got 0"],
    [{ engine: { sigterm_timeout: "5s" } }, 'config engine.sigterm_timeout: Invalid input: expected number, received string, got "5s"'],
    [{ server: { address: "localhost" } }, 'config server.address: must be host:port, e.g. 127.0.0.1:50051, got "localhost"'],
    [{ http: { address: "8080" } }, 'config http.address: must be host:port, e.g. 127.0.0.1:8080, or off, got "8080"'],
    [{ http: { allowed_hosts: ["http://plinth.example.com"] } }, "config http.allowed_hosts[0]: must be a host name, .domain or *"],
    [{ http: { cors: { allowed_origins: ["https://app.example.com/"] } } }, "config http.cors.allowed_origins[0]: must be an origin"],
    [{ http: { cors: { allow_credentials: "yes" } } }, "config http.cors.allow_credentials:"],
    [
      { http: { cors: { allowed_origins: ["*"], allow_credentials: true } } },
      'config http.cors.allow_credentials: allow_credentials cannot go with allowed_origins "*"',
    ],
    [{ server: { auth: { visibility: "mine" } } }, 'config server.auth.visibility: Invalid option: expected one of "own"|"all", got "mine"'],
    [
      { server: { auth: { tokens: [{ name: "x", sha256: "a".repeat(64), roles: ["read_some"] }] } } },
      "config server.auth.tokens[0].roles[0]: Invalid option",
    ],
    [{ plugins: [{ module: "a.ts", runtime: "python" }] }, "config plugins[0].runtime:"],
    [{ plugins: [{ runtime: "node" }] }, "config plugins[0].module:"],
    [{ engnie: {} }, "config engnie: unknown key"],
    [{ backend: { kind: "mysql" } }, "config backend.kind:"],
    [{ backend: { kind: "postgres" } }, "config backend.url: backend.kind postgres needs backend.url"],
    [{ backend: { synchronous: "off" } }, "config backend.synchronous:"],
    [{ backend: { keep_revisions: 0 } }, "config backend.keep_revisions: Too small"],
    [{ backend: { claim_affinity_ms: -1 } }, "config backend.claim_affinity_ms: Too small"],
    [{ backend: { claim_affinity_ms: 0.5 } }, "config backend.claim_affinity_ms:"],
    [{ plugins: [{ module: "a.ts", resident_mb: -1 }] }, "config plugins[0].resident_mb: Too small"],
    [
      { plugins: [{ module: "a.ts", max_memory_mb: 256, resident_mb: 256 }] },
      "config plugins[0].resident_mb: must be less than max_memory_mb (256): the instances a child keeps count against its memory; e.g. half of it, got 256",
    ],
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

describe("the config file and the command line say the same", () => {
  /** A server process on a config that loads no plugin; resolves with its exit code and output once it exits. */
  const exited = async (args: string[]) => {
    const server = startProcess(args);
    const [code] = await once(server.child, "exit");
    return { code, output: server.output() };
  };
  const quick = "backend:\n  kind: memory\nplugins: []\n";

  it("off: no HTTP listener, in the file as with --http-address off", async () => {
    for (const args of [
      ["--config", writeConfig(`${quick}http:\n  address: off\nmetrics:\n  address: off\n`), "--address", "127.0.0.1:0"],
      ["--config", writeConfig(`${quick}http:\n  address: 127.0.0.1:0\n`), "--address", "127.0.0.1:0", "--http-address", "off"],
    ]) {
      const server = startProcess(args);
      const { channel, engine } = clients(await server.port);
      expect((await engine.listPlugins({})).plugins).toEqual([]);
      channel.close();
      server.child.kill("SIGTERM");
      await once(server.child, "exit");
      expect(server.output()).not.toContain("Connect and gRPC-Web");
      expect(server.output()).not.toContain('"metrics"');
    }
    expect(parse({ http: { address: "off" }, metrics: { address: "off" } })).toMatchObject({
      http: { address: undefined },
      metrics: { address: undefined },
    });
  });

  it("checks an option's value as it checks the key it stands for, naming the option", async () => {
    const file = writeConfig(quick);
    const address = await exited(["--config", file, "--address", "localhost"]);
    expect(address.code).toBe(1);
    expect(address.output).toContain('--address: must be host:port, e.g. 127.0.0.1:50051, got \\"localhost\\"');
    const http = await exited(["--config", file, "--address", "127.0.0.1:0", "--http-address", "8080"]);
    expect(http.code).toBe(1);
    expect(http.output).toContain('--http-address: must be host:port, e.g. 127.0.0.1:8080, or off, got \\"8080\\"');
    const level = await exited(["--config", file, "--log-level", "loud"]);
    expect(level.code).toBe(2);
    expect(level.output).toContain('--log-level: must be one of trace, debug, info, warn, error, fatal, silent, got "loud"');
  });
});
