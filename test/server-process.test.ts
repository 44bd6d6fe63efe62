import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { isAlive, isPluginChild, processes } from "./helpers/processes.ts";
import { root } from "./helpers/server.ts";
import { clients, descendantsOf, startProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

describe("the server as a process", () => {
  it("stops gracefully on SIGTERM with actions running, and leaves no child behind", async () => {
    const server = startProcess(["--config", writeConfig("backend:\n  path: plinth.db\n"), "--address", "127.0.0.1:0"]);
    const { channel, engine, actions } = clients(await server.port);
    const modelId = (await engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action: started } = await engine.fit({ modelId, kwargs: { sleep: json(60) } });
    const waiting = actions.waitAction({ actionId: started!.id });
    // Wait until the fit runs in its child, then note every process below the server.
    for await (const update of actions.watchAction({ actionId: started!.id })) {
      if (update.action!.status === ActionStatus.EXECUTING) break;
    }
    const all = descendantsOf(server.child.pid!);
    expect(all.filter((pid) => isPluginChild(processes().find((p) => p.pid === pid)?.cmdline ?? "")).length).toBeGreaterThan(0);
    server.child.kill("SIGTERM");
    const [code] = await once(server.child, "exit");
    expect(code).toBe(0);
    // The waiting client got its action back, cancelled by the shutdown.
    const action = (await waiting).action!;
    expect(action.status).toBe(ActionStatus.CANCELLED);
    expect(action.error?.message).toBe("the server is shutting down");
    channel.close();
    expect(all.filter(isAlive)).toEqual([]);
    expect(server.output()).toContain('"msg":"stopped"');
  });

  it("refuses a bad config at start, naming the key", async () => {
    const server = startProcess(["--config", writeConfig("engine:\n  max_children: -1\n  sigterm_timout: 3\n")]);
    await expect(server.port).rejects.toThrow(/exited with 1/);
    expect(server.output()).toContain("config engine.max_children: Too small: expected number to be >0, got -1");
    expect(server.output()).toContain("config engine.sigterm_timout: unknown key");
  });

  it("says why it cannot start in one line on a terminal, and as a JSON log line elsewhere", async () => {
    const config = writeConfig("engine:\n  max_children: -1\n");
    // A real pseudo-terminal (script(1)) for the server's stdout and stderr.
    const child = spawn("script", ["-qec", `${process.execPath} --import tsx server/main.ts --config ${config}`, "/dev/null"], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const [code] = await once(child, "exit");
    expect(code).toBe(1);
    expect(out).toMatch(/^plinth: config engine\.max_children: Too small: expected number to be >0, got -1\r?$/m);
    expect(out).not.toContain('"level":50');
  });

  it("loads a plugin from a package installed beside its config, named by the package", async () => {
    const dir = tempDir();
    const pkg = join(dir, "node_modules/@team/demo");
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "@team/demo", type: "module", exports: { ".": { import: "./index.mjs" } } }));
    const sdk = pathToFileURL(join(root, "sdk/mod.ts")).href;
    writeFileSync(
      join(pkg, "index.mjs"),
      `import { definePlugin } from ${JSON.stringify(sdk)};\nexport default definePlugin({ name: "demo", dataAccess: { "demo.answer": { run: () => 42 } } });\n`,
    );
    const server = startProcess([
      "--config",
      writeConfig('backend:\n  kind: memory\nplugins:\n  - module: "@team/demo"\n', dir),
      "--address",
      "127.0.0.1:0",
    ]);
    const { channel, engine } = clients(await server.port);
    const { plugins } = await engine.listPlugins({});
    expect(plugins.map((p) => [p.name, p.dataAccess.map((d) => d.name)])).toEqual([["demo", ["demo.answer"]]]);
    channel.close();
    server.child.kill("SIGTERM");
    await once(server.child, "exit");
  });

  it("--watch watches every plugin, as plugins[].watch would", async () => {
    const config = writeConfig(`backend:\n  kind: memory\nplugins:\n  - module: ${join(root, "plugins/system-test/mod.ts")}\n`);
    const server = startProcess(["--config", config, "--address", "127.0.0.1:0", "--watch"]);
    const { channel, engine } = clients(await server.port);
    const { plugins } = await engine.listPlugins({});
    expect(plugins.map((p) => [p.name, p.watched])).toEqual([["systest", true]]);
    channel.close();
    server.child.kill("SIGTERM");
    await once(server.child, "exit");
  });
});
