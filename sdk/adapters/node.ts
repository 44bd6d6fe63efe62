/**
 * The child's entry point on Node: `node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms] [resident bytes] [max memory MiB]`.
 * Keeps the real stdout for protocol frames and sends every other write to stderr, so
 * console.log in a plugin cannot corrupt the channel; the plugin runs on a worker
 * thread (node-thread.ts), started first so that it loads while this thread does, with
 * its heap bounded when a memory limit is given. It keeps up to `resident bytes` of
 * instances between calls (../worker/residents.ts); 0 or none keeps nothing.
 * @module
 */
import process from "node:process";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { threadStart } from "../worker/thread-start.ts";

const [modulePath, maxFrameBytes, progressIntervalMs, residentBytes, maxMemoryMb] = process.argv.slice(2);
const residentBudget = Number(residentBytes ?? 0);
if (!modulePath || !(residentBudget >= 0)) {
  process.stderr.write(
    "usage: node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms] [resident bytes] [max memory MiB]\n",
  );
  process.exit(2);
}

// The plugin thread writes the frames to fd 1 and its output to fd 2, synchronously:
// in blocking mode, each write goes out whole instead of failing with EAGAIN when the
// pipe is full. (Node's stdio handles offer it; the thread falls back to waiting.)
for (const stream of [process.stdout, process.stderr]) {
  (stream as unknown as { _handle?: { setBlocking?(blocking: boolean): number } })._handle?.setBlocking?.(true);
}
// This thread's own writes to stdout go to stderr.
const stdout = process.stdout;
const writeFrame = stdout.write.bind(stdout);
const toStderr = process.stderr.write.bind(process.stderr);
stdout.write = toStderr as typeof stdout.write;

const start = threadStart(pathToFileURL(modulePath).href, "node", process.pid, Number(progressIntervalMs ?? 50), residentBudget);
// The built child (dist/) runs a plugin the server did not build through tsx, registered in its thread.
const thread = process.env.PLINTH_PLUGIN_LOADER === "tsx" ? "./node-thread-tsx.mjs" : "./node-thread.mjs";
const worker = new Worker(new URL(thread, import.meta.url), {
  // Not the process's --import tsx: it would load tsx once more, and its hooks would not
  // reach the thread's modules anyway (node-thread.mjs registers them). But the permission
  // model's flags, when the server set them: a worker without them runs unrestricted.
  execArgv: process.execArgv.filter((flag) =>
    /^--(experimental-permission|allow-fs-read=|allow-fs-write=|allow-worker|allow-child-process|allow-addons)/.test(flag),
  ),
  ...(maxMemoryMb ? { resourceLimits: { maxOldGenerationSizeMb: Number(maxMemoryMb) } } : {}),
});
worker.postMessage(start.message);

const { serveWorker } = await import("../worker/serve.ts");
await serveWorker({
  input: process.stdin,
  write: (bytes) => new Promise<void>((resolve, reject) => writeFrame(bytes, (e) => (e ? reject(e) : resolve()))),
  onTerminate: (listener) => process.on("SIGTERM", listener),
  thread: {
    post: (message, transfer) => worker.postMessage(message, transfer ?? []),
    onMessage: (listener) => worker.on("message", listener),
    onError: (listener) => worker.on("error", listener),
    onExit: (listener) => worker.on("exit", listener),
  },
  state: start.state,
  // Exit even if the plugin left timers or handles behind: the frames are flushed.
  exit: (code) => process.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
});
