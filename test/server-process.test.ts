import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createChannel, createClient } from "nice-grpc";
import { describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { niceDefinition } from "../server/rpc/service-definition.ts";
import { json } from "./helpers/args.ts";
import { isAlive, processes } from "./helpers/processes.ts";
import { root } from "./helpers/server.ts";

const tsx = join(root, "node_modules/.bin/tsx");

/** Starts `tsx server/main.ts` and resolves with its port once it logs "serving". */
function startProcess(args: string[]): { child: ChildProcess; port: Promise<number>; output: () => string } {
  const child = spawn(tsx, ["server/main.ts", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const port = new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const serving = output.split("\n").find((line) => line.includes('"msg":"serving"'));
      if (serving) resolve(Number(JSON.parse(serving).address.split(":").at(-1)));
    });
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("exit", (code) => reject(new Error(`server exited with ${code} before serving:\n${output}`)));
  });
  return { child, port, output: () => output };
}

/** Every live process whose ancestry leads to pid. */
function descendantsOf(pid: number): number[] {
  const all = processes().filter((p) => p.state !== "Z");
  const found: number[] = [];
  let frontier = [pid];
  while (frontier.length) {
    const next = all.filter((p) => frontier.includes(p.ppid)).map((p) => p.pid);
    found.push(...next);
    frontier = next;
  }
  return found;
}

describe("the server as a process", () => {
  it("stops gracefully on SIGTERM with actions running, and leaves no child behind", async () => {
    const dir = mkdtempSync(join(tmpdir(), "plinth-stop-"));
    writeFileSync(join(dir, "plinth.yaml"), "backend:\n  path: plinth.db\n");
    const server = startProcess(["--config", join(dir, "plinth.yaml"), "--address", "127.0.0.1:0"]);
    const port = await server.port;
    const channel = createChannel(`127.0.0.1:${port}`);
    const engine = createClient(niceDefinition(EngineService), channel);
    const modelId = (await engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action: started } = await engine.fit({ modelId, kwargs: { sleep: json(60) } });
    const waiting = createClient(niceDefinition(ActionService), channel).waitAction({ actionId: started!.id });
    // Wait until the fit runs in its child, then note every process below the server.
    for await (const update of createClient(niceDefinition(ActionService), channel).watchAction({ actionId: started!.id })) {
      if (update.action!.status === ActionStatus.EXECUTING) break;
    }
    const all = descendantsOf(server.child.pid!);
    expect(all.filter((pid) => processes().find((p) => p.pid === pid)?.cmdline.includes("sdk/adapters/")).length).toBeGreaterThan(0);
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
    const dir = mkdtempSync(join(tmpdir(), "plinth-config-"));
    const file = join(dir, "plinth.yaml");
    writeFileSync(file, "engine:\n  max_children: -1\n  sigterm_timout: 3\n");
    const server = startProcess(["--config", file]);
    await expect(server.port).rejects.toThrow(/exited with 1/);
    expect(server.output()).toContain("config engine.max_children: Too small: expected number to be >0, got -1");
    expect(server.output()).toContain("config engine.sigterm_timout: unknown key");
  });
});
