/**
 * A real plugin child (sdk/adapters, on Node or Deno) driven over its pipes frame by
 * frame, without the server: for tests of the child's side of the protocol, where every
 * field of every frame matters.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, type WorkerMessage, WorkerMessageSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { encodeFrame, FrameDecoder } from "../../sdk/worker/frames.ts";
import { denoBinary } from "../../server/process/runtimes.ts";
import { root } from "./server.ts";

const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

/**
 * The adapter's command line for `module`, with `tail` after it (max frame bytes,
 * progress interval ms, resident bytes, ...), as the server's runtimes.ts would start it.
 */
export function workerCommand(
  runtime: "node" | "deno",
  module: string,
  tail: string[],
): { file: string; args: string[]; env: Record<string, string> } {
  const env = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", NO_COLOR: "1" };
  if (runtime === "node") return { file: process.execPath, args: ["--import", tsxLoader, join(root, "sdk/adapters/node.ts"), module, ...tail], env };
  return {
    file: denoBinary(),
    args: ["run", "--quiet", "--no-prompt", `--allow-read=${root}`, join(root, "sdk/adapters/deno.ts"), module, ...tail],
    env: { ...env, DENO_DIR: join(root, "node_modules/.cache/deno") },
  };
}

export class WorkerPipe {
  readonly process: ChildProcess;
  /** What the child wrote to stderr: its log, and why it ended if it did. */
  stderr = "";
  readonly #frames: WorkerMessage[] = [];
  #waiting: (() => void) | undefined;
  #ended = false;

  constructor(command: { file: string; args: string[]; env: Record<string, string> }) {
    this.process = spawn(command.file, command.args, { stdio: ["pipe", "pipe", "pipe"], env: command.env });
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    this.process.stdout!.on("data", (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) this.#frames.push(fromBinary(WorkerMessageSchema, frame));
      this.#waiting?.();
    });
    this.process.stderr!.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.process.stdin!.on("error", () => {}); // EPIPE once it is gone: next() says so
    this.process.on("close", () => {
      this.#ended = true;
      this.#waiting?.();
    });
  }

  /** Writes the messages' frames in one write: a child may read several frames in one chunk. */
  send(...messages: MessageInitShape<typeof ServerMessageSchema>[]): void {
    const frames = messages.map((message) => encodeFrame(toBinary(ServerMessageSchema, create(ServerMessageSchema, message))));
    this.process.stdin!.write(Buffer.concat(frames));
  }

  /** The next frame the child writes; fails, with its stderr, if it ends first. */
  async next(): Promise<WorkerMessage> {
    while (this.#frames.length === 0) {
      if (this.#ended) throw new Error(`the child ended (code ${this.process.exitCode}, signal ${this.process.signalCode}): ${this.stderr}`);
      await new Promise<void>((resolve) => (this.#waiting = resolve));
      this.#waiting = undefined;
    }
    return this.#frames.shift()!;
  }

  /** The next frame that is not progress, as its kind. */
  async nextBesidesProgress(): Promise<WorkerMessage["kind"]> {
    for (;;) {
      const { kind } = await this.next();
      if (kind.case !== "progress") return kind;
    }
  }

  /** Ends its input, as a server done with it does, and waits for it to exit. */
  async close(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = once(this.process, "exit");
    this.process.stdin!.end();
    await exited;
  }
}
