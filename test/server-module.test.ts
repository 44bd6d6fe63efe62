/**
 * `plinth/server` (server/mod.ts): a server started and stopped from a program, as a
 * team's own tests or app would embed it, driven with `plinth/client`.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createPlinthClient } from "../client/mod.ts";
import { type RunningServer, start } from "../server/mod.ts";
import { pluginChildren } from "./helpers/processes.ts";
import { root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const silent = pino({ level: "silent" });
let running: RunningServer | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

/** A config file in a folder of its own: its relative paths are taken from there. */
function configFile(lines: string[]): string {
  const dir = tempDir();
  const file = join(dir, "plinth.yaml");
  writeFileSync(file, lines.join("\n"));
  return file;
}

describe("plinth/server", () => {
  it("starts from a config file on a free port, serves gRPC and Connect, and stops leaving no child behind", async () => {
    const config = configFile(["backend:", "  path: data/plinth.db", "plugins:", `  - module: ${join(root, "plugins/system-test/mod.ts")}`]);
    running = await start({ config, address: "127.0.0.1:0", httpAddress: "127.0.0.1:0", logger: silent });
    expect(running.port).toBeGreaterThan(0);

    const client = createPlinthClient(`127.0.0.1:${running.port}`);
    const { modelId } = await client.create("systest.Model").done;
    const { prediction } = await client.predict(modelId, { args: [[1, 2]] }).done;
    expect(prediction).toMatchObject({ args: [[1, 2]] });
    client.close();

    const listed = await fetch(`http://127.0.0.1:${running.httpPort}/plinth.v1.EngineService/ListPlugins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(((await listed.json()) as { plugins: { name: string }[] }).plugins.map((p) => p.name)).toEqual(["systest"]);

    await running.stop();
    running = undefined;
    expect(pluginChildren(process.pid)).toEqual([]);
  });

  it("refuses a wrong config with the key and what to fix, and starts nothing", async () => {
    const config = configFile(["engine:", "  max_children: -1"]);
    await expect(start({ config, address: "127.0.0.1:0", logger: silent })).rejects.toThrow(/engine\.max_children/);
    expect(pluginChildren(process.pid)).toEqual([]);
  });
});
