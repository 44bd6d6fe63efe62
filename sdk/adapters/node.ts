/**
 * The child's entry point on Node: `node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms] [max memory MiB]`.
 * Keeps the real stdout for protocol frames and sends every other write to stderr, so
 * console.log in a plugin cannot corrupt the channel; the plugin runs on a worker
 * thread (node-thread.ts), with its heap bounded when a memory limit is given.
 * @module
 */
import process from "node:process";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { serveWorker } from "../worker/serve.ts";

const [modulePath, maxFrameBytes, progressIntervalMs, maxMemoryMb] = process.argv.slice(2);
if (!modulePath) {
  process.stderr.write("usage: node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms] [max memory MiB]\n");
  process.exit(2);
}

const stdout = process.stdout;
const writeFrame = stdout.write.bind(stdout);
const toStderr = process.stderr.write.bind(process.stderr);
// The plugin thread's console and process.stdout come through here too.
stdout.write = toStderr as typeof stdout.write;

await serveWorker(pathToFileURL(modulePath).href, {
  runtime: "node",
  pid: process.pid,
  input: process.stdin,
  write: (bytes) => new Promise<void>((resolve, reject) => writeFrame(bytes, (e) => (e ? reject(e) : resolve()))),
  onTerminate: (listener) => process.on("SIGTERM", listener),
  startThread: () => {
    const worker = new Worker(new URL("./node-thread.mjs", import.meta.url), {
      ...(maxMemoryMb ? { resourceLimits: { maxOldGenerationSizeMb: Number(maxMemoryMb) } } : {}),
    });
    return {
      post: (message, transfer) => worker.postMessage(message, transfer ?? []),
      onMessage: (listener) => worker.on("message", listener),
      onError: (listener) => worker.on("error", listener),
      onExit: (listener) => worker.on("exit", listener),
    };
  },
  // Exit even if the plugin left timers or handles behind: the frames are flushed.
  exit: (code) => process.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
  progressIntervalMs: Number(progressIntervalMs ?? 50),
});
