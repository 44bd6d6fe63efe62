/**
 * Plinth as a package, as a team installs it into a project of its own: the clone's build
 * packed with `npm pack`, the tarball installed into an empty folder that has no access to
 * the clone, a TypeScript plugin there importing `plinth/sdk`, served by `npx plinth serve`
 * and driven by `npx plinth` (create, fit, predict), all from the installed build; then
 * `npx plinth init` there, the project it makes installed, tested and served. The tests
 * run in order on one project.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { distIsFresh } from "../scripts/build-sources.mjs";
import { root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
/** An install from the registry's metadata and npm's cache takes a while on a busy machine. */
const SLOW = 600_000;

let app: string;
/** The environment of the project's commands: none of the clone's. */
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  // The build as `npm pack` ships it, of the sources as they are: made again unless the
  // last build (npm ci's prepare, say) was of these very sources.
  if (!distIsFresh(root)) await run(process.execPath, [join(root, "scripts/build.mjs")], { cwd: root });
  const packed = tempDir("plinth-pack-");
  await run("npm", ["pack", "--ignore-scripts", "--pack-destination", packed], { cwd: root });
  const tarball = join(packed, readdirSync(packed).find((name) => name.endsWith(".tgz"))!);

  // better-sqlite3's binary for this Node, from the clone (no download; compiling it would take minutes).
  const prebuilds = tempDir("plinth-prebuilds-");
  const version = (await import(join(root, "node_modules/better-sqlite3/package.json"), { with: { type: "json" } })).default.version;
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  await run("tar", ["-czf", join(prebuilds, name), "-C", join(root, "node_modules/better-sqlite3"), "build/Release/better_sqlite3.node"]);

  app = tempDir("plinth-app-");
  env = { PATH: process.env.PATH, HOME: process.env.HOME, npm_config_better_sqlite3_local_prebuilds: prebuilds, NO_COLOR: "1" };
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", tarball], { cwd: app, env });
  // The project's plugin, in TypeScript, importing the SDK as a project does.
  writeFileSync(
    join(app, "mean.ts"),
    `import { defineModel, definePlugin, Tensor } from "plinth/sdk";

interface Mean { mean: number }

export default definePlugin({
  name: "mean",
  models: {
    "mean.Mean": defineModel({
      instantiate: (): Mean => ({ mean: 0 }),
      fit: (_ctx, _model: Mean, args): Mean => {
        const xs = args[0] as number[];
        return { mean: xs.reduce((a, b) => a + b, 0) / xs.length };
      },
      predict: (_ctx, model: Mean) => new Tensor("float32", [1], new Float32Array([model.mean])),
    }),
  },
});
`,
  );
}, SLOW);

/** The servers a test started: stopped after the file if a test left one running. */
const servers: ChildProcess[] = [];
afterAll(async () => {
  for (const server of servers.filter((s) => s.exitCode === null && s.signalCode === null)) {
    server.kill("SIGTERM");
    await once(server, "exit");
  }
});

/** A config serving the project's plugin on a free loopback port, no HTTP listener. */
const config = (database: string, module: string) =>
  ["server:", "  address: 127.0.0.1:0", "http:", '  address: "off"', "backend:", `  path: ${database}`, "plugins:", `  - module: ${module}`].join(
    "\n",
  );

/** Starts `command` in `cwd` and resolves once it logs "serving": its gRPC port, and all it logged (`output()`). */
async function serve(command: string, args: string[], cwd: string) {
  const server = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "inherit"] });
  servers.push(server);
  let out = "";
  const port = await new Promise<string>((resolve, reject) => {
    server.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /"address":"127\.0\.0\.1:(\d+)","msg":"serving"/.exec(out);
      if (match) resolve(match[1]!);
    });
    server.once("exit", (code) => reject(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${out}`)));
  });
  return { server, port, output: () => out };
}

const plinth = (args: string[]) => run("npx", ["plinth", ...args], { cwd: app, env });

describe("the package installed into a project of its own", () => {
  it("runs the command line from its build", async () => {
    const { stdout } = await plinth(["--help"]);
    expect(stdout).toContain("serve");
  });

  it("serves a TypeScript plugin that imports plinth/sdk, and trains and predicts with it through npx plinth", async () => {
    writeFileSync(join(app, "mean.yaml"), config("data/plinth.db", "mean.ts"));
    // The command npx runs (node_modules/.bin/plinth), started directly: the test owns the server's pid for its SIGTERM.
    const { server, port, output } = await serve(join(app, "node_modules/.bin/plinth"), ["serve", "--config", "mean.yaml"], app);
    const address = ["--address", `127.0.0.1:${port}`];

    const created = JSON.parse((await plinth(["create", "mean.Mean", ...address, "-o", "json"])).stdout) as { modelId: string };
    const modelId = created.modelId;
    await plinth(["fit", modelId, "-a", "[1, 2, 6]", ...address]);
    const { stdout } = await plinth(["predict", modelId, ...address, "-o", "json"]);
    // The plugin's Tensor, made by its plinth/sdk, travels as a tensor: one SDK with the child's.
    const tensor = JSON.parse(stdout).result.prediction.tensor as { dtype: string; shape: number[]; data: string };
    expect(tensor).toMatchObject({ dtype: "D_TYPE_FLOAT32", shape: [1] });
    expect(Buffer.from(tensor.data, "base64").readFloatLE(0)).toBe(3);

    // Not through tsx: the child runs the installed build.
    expect(output()).not.toContain("plugin loads through tsx");
    server.kill("SIGTERM");
    const [code] = await once(server, "exit");
    expect(code).toBe(0);
    expect(output()).toMatch(/"msg":"stopped"/);
  });

  it("loads a plugin it cannot build (a computed import) through tsx on its built child, with one SDK", async () => {
    writeFileSync(
      join(app, "fallback.ts"),
      `import { defineModel, definePlugin, Tensor } from "plinth/sdk";
const os: typeof import("node:os") = await import(["node", "os"].join(":"));
export default definePlugin({
  name: "fallback",
  models: {
    "fallback.Model": defineModel({
      instantiate: () => ({}),
      predict: () => ({ cpus: new Tensor("int32", [1], new Int32Array([os.cpus().length])), pid: process.pid }),
    }),
  },
});
`,
    );
    writeFileSync(join(app, "fallback.yaml"), config("data/fallback.db", "fallback.ts"));
    const { server, port, output } = await serve(join(app, "node_modules/.bin/plinth"), ["serve", "--config", "fallback.yaml"], app);
    expect(output()).toMatch(/it imports a computed name.*"msg":"plugin loads through tsx"/);
    const address = ["--address", `127.0.0.1:${port}`];
    const { modelId } = JSON.parse((await plinth(["create", "fallback.Model", ...address, "-o", "json"])).stdout) as { modelId: string };
    const { entries } = JSON.parse((await plinth(["predict", modelId, ...address, "-o", "json"])).stdout).result.prediction.map;
    // The plugin's Tensor inside its answer travels as a tensor: the SDK it imported is the one its thread encodes with.
    expect(entries.cpus.tensor).toMatchObject({ dtype: "D_TYPE_INT32", shape: [1] });
    const child = readFileSync(`/proc/${entries.pid.json}/cmdline`, "utf8").split("\0");
    expect(child).toContain(join(app, "node_modules/plinth/dist/sdk/adapters/node.mjs"));
    expect(child.filter((arg) => arg.includes("tsx") || (arg.endsWith(".ts") && !arg.endsWith("fallback.ts")))).toEqual([]);
    server.kill("SIGTERM");
    expect((await once(server, "exit"))[0]).toBe(0);
  });

  it("runs as docs/service/plinth.service says: its ExecStart serves, and systemd's stop signal stops it in order", async () => {
    const unit = readFileSync(join(root, "docs/service/plinth.service"), "utf8");
    const setting = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(unit)![1]!;
    // The unit's paths, moved: /opt/plinth is this project, /etc/plinth and /var/lib/plinth folders of the test's.
    const etc = tempDir("plinth-etc-");
    const data = tempDir("plinth-var-");
    const moved = (text: string) => text.replaceAll("/opt/plinth", app).replaceAll("/etc/plinth", etc).replaceAll("/var/lib/plinth", data);
    writeFileSync(join(etc, "plinth.yaml"), config(`${data}/plinth.db`, join(app, "mean.ts")));
    // systemd's own check of the unit, where this machine has it (paths moved, so its command exists).
    if (existsSync("/usr/bin/systemd-analyze")) {
      writeFileSync(join(etc, "plinth.service"), moved(unit));
      await run("/usr/bin/systemd-analyze", ["verify", join(etc, "plinth.service")]);
    }
    const [command, ...args] = moved(setting("ExecStart")).split(" ");
    const { server: service, output } = await serve(command!, args, moved(setting("WorkingDirectory")));
    service.kill(setting("KillSignal") as NodeJS.Signals);
    const [code] = await once(service, "exit");
    expect(code).toBe(0);
    expect(output()).toMatch(/"msg":"stopped"/);
    expect(existsSync(join(data, "plinth.db"))).toBe(true);
  });

  it("says how to get Deno when a plugin asks for it and the project has none", async () => {
    writeFileSync(join(app, "deno.yaml"), ["server:", "  address: 127.0.0.1:0", "plugins:", "  - module: mean.ts", "    runtime: deno"].join("\n"));
    const failed = await plinth(["serve", "--config", "deno.yaml"]).then(
      () => undefined,
      (error: { code: number; stdout: string }) => error,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stdout).toMatch(
      /plugins\[0\].*runtime: deno needs Deno: install the npm package beside Plinth \(npm install deno\), or give its binary as engine\.deno_binary/,
    );
  });

  // After the test above: the project made here installs Deno.
  it("npx plinth init makes a plugin project there: its tests pass under node:test and Deno, it type-checks, and npx plinth serve serves it", async () => {
    const { stdout } = await plinth(["init"]);
    expect(stdout).toMatch(/A Plinth plugin project in \.: package\.json, plugin\.ts, plugin\.test\.ts, plinth\.yaml/);
    // The project's own package.json is completed, its dependency on the tarball kept.
    const pkg = JSON.parse(readFileSync(join(app, "package.json"), "utf8"));
    expect(pkg.dependencies).toMatchObject({ plinth: expect.stringMatching(/plinth-.*\.tgz$/), zod: expect.any(String) });
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund"], { cwd: app, env });

    const npm = (script: string) => run("npm", ["run", "-s", script], { cwd: app, env });
    expect((await npm("test")).stdout).toMatch(/# pass 2\n# fail 0/);
    expect((await npm("test:deno")).stdout).toMatch(/ok \| 2 passed \| 0 failed/);
    await npm("typecheck");

    // As the project's README says, on a free port: plinth.yaml is found in the folder.
    const { server, port, output } = await serve(
      join(app, "node_modules/.bin/plinth"),
      ["serve", "--address", "127.0.0.1:0", "--http-address", "off"],
      app,
    );
    expect(output()).toContain("config: plinth.yaml of the working folder");
    const name = /name: "(\w+)"/.exec(readFileSync(join(app, "plugin.ts"), "utf8"))![1]!;
    const address = ["--address", `127.0.0.1:${port}`];
    const { modelId } = JSON.parse((await plinth(["create", `${name}.Line`, ...address, "-o", "json"])).stdout) as { modelId: string };
    const fitted = JSON.parse((await plinth(["fit", modelId, "-a", `@${name}.points`, ...address, "-o", "json"])).stdout);
    expect(fitted.state).toMatchObject({ epoch: 500 });
    const predicted = JSON.parse((await plinth(["predict", modelId, "-a", "[0, 0.5, 1]", ...address, "-o", "json"])).stdout);
    const ys = predicted.result.prediction.json as number[];
    expect(ys.map((y) => Math.round(y * 10) / 10)).toEqual([1, 2, 3]);
    server.kill("SIGTERM");
    expect((await once(server, "exit"))[0]).toBe(0);
  });
});
