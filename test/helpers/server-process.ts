/** The server as a real process: `node --import tsx server/main.ts`, one process, so a signal reaches it. */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createChannel, createClient } from "nice-grpc";
import { afterAll, inject } from "vitest";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import { niceDefinition } from "../../server/rpc/service-definition.ts";
import { processes } from "./processes.ts";
import { root } from "./server.ts";
import { tempDir } from "./temp.ts";

const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

export interface ServerProcess {
  child: ChildProcess;
  /** Resolves with the port once the server logs "serving"; rejects if it exits first. */
  port: Promise<number>;
  output(): string;
}

export function startProcess(args: string[], options: SpawnOptions = {}): ServerProcess {
  return watchServing(
    spawn(process.execPath, ["--import", tsxLoader, "server/main.ts", ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      ...options,
    }),
  );
}

/**
 * startProcess's server from the run's bundle of server/main.ts (test/global-server-bundle.ts):
 * the same code, about 1.3 s less of a core per start than tsx loading each module. For the
 * tests that start server processes for what they serve; those about how a user starts one
 * (the command line, its options and messages) use startProcess.
 */
export function startBundledProcess(args: string[], options: SpawnOptions = {}): ServerProcess {
  return watchServing(spawn(process.execPath, [inject("serverBundle"), ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], ...options }));
}

const heapProbe = fileURLToPath(new URL("heap-probe.mjs", import.meta.url));

export interface MeasuredProcess extends ServerProcess {
  /** The server's heap and the buffers its objects hold, after full collections, in MiB. */
  heapMiB(): Promise<number>;
}

/**
 * startBundledProcess's server with heap-probe.mjs preloaded: its memory measured in its own
 * process, which nothing but the server allocates in.
 */
export function startMeasuredProcess(args: string[]): MeasuredProcess {
  const child = spawn(process.execPath, ["--expose-gc", "--import", heapProbe, inject("serverBundle"), ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  const heapMiB = () =>
    new Promise<number>((resolve, reject) => {
      const exited = (code: number | null, signal: string | null) => reject(new Error(`server exited with ${code ?? signal} before measuring`));
      child.once("exit", exited);
      child.once("message", (m: { heapUsed: number; external: number }) => {
        child.off("exit", exited);
        resolve((m.heapUsed + m.external) / 2 ** 20);
      });
      child.send("heap");
    });
  return { ...watchServing(child), heapMiB };
}

/**
 * `npm start -- <args>`, as a user types it: npm leads a process group of its own, as
 * a job in a terminal does, so the group is what Ctrl-C reaches.
 */
export function startNpm(args: string[]): ServerProcess {
  return watchServing(spawn("npm", ["start", "--", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"], detached: true }));
}

/**
 * The server processes of this file still running when its tests are done: a test that
 * failed before stopping its own. They are killed (their plugin children end with their
 * pipes), so that a failure leaves nothing behind.
 */
const running = new Set<ChildProcess>();
afterAll(() => {
  for (const child of running) {
    // npm start leads a group of its own: the whole group (npm, its shell, the server).
    if (child.spawnargs[0] === "npm") signalGroup(child, "SIGKILL");
    else child.kill("SIGKILL");
  }
});

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // Gone already.
  }
}

function watchServing(child: ChildProcess): ServerProcess {
  running.add(child);
  child.once("exit", () => running.delete(child));
  let output = "";
  const port = new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const serving = output.split("\n").find((line) => line.includes('"msg":"serving"'));
      if (serving) resolve(Number(JSON.parse(serving).address.split(":").at(-1)));
    });
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("exit", (code, signal) => reject(new Error(`server exited with ${code ?? signal} before serving:\n${output}`)));
  });
  port.catch(() => {}); // Callers that expect a failure await it themselves.
  return { child, port, output: () => output };
}

/** A config file in a new temporary folder; returns its path. */
export function writeConfig(yaml: string, dir = tempDir("plinth-proc-")): string {
  const file = join(dir, "plinth.yaml");
  writeFileSync(file, yaml);
  return file;
}

export function clients(port: number) {
  const channel = createChannel(`127.0.0.1:${port}`);
  return {
    channel,
    engine: createClient(niceDefinition(EngineService), channel),
    actions: createClient(niceDefinition(ActionService), channel),
  };
}

/** Every live process whose ancestry leads to pid. */
export function descendantsOf(pid: number): number[] {
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

declare module "vitest" {
  export interface ProvidedContext {
    /** The path of the run's bundle of server/main.ts (test/global-server-bundle.ts). */
    serverBundle: string;
    /** The same of cli/main.ts. */
    cliBundle: string;
  }
}
