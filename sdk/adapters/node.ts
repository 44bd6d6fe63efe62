/**
 * The child's entry point on Node: `node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms]`.
 * Keeps the real stdout for protocol frames and sends every other write to stderr,
 * so console.log in a plugin cannot corrupt the channel.
 * @module
 */
import process from "node:process";
import { pathToFileURL } from "node:url";
import { serveWorker } from "../worker/serve.ts";

const [modulePath, maxFrameBytes, progressIntervalMs] = process.argv.slice(2);
if (!modulePath) {
  process.stderr.write("usage: node --import tsx sdk/adapters/node.ts <plugin module> [max frame bytes] [progress interval ms]\n");
  process.exit(2);
}

const stdout = process.stdout;
const writeFrame = stdout.write.bind(stdout);
const toStderr = process.stderr.write.bind(process.stderr);
stdout.write = toStderr as typeof stdout.write;

const code = await serveWorker(pathToFileURL(modulePath).href, {
  runtime: "node",
  pid: process.pid,
  input: process.stdin,
  write: (bytes) => new Promise<void>((resolve, reject) => writeFrame(bytes, (e) => (e ? reject(e) : resolve()))),
  onTerminate: (listener) => process.on("SIGTERM", listener),
  logLine: (line) => toStderr(`${line}\n`),
  exit: (code) => process.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
  progressIntervalMs: Number(progressIntervalMs ?? 50),
});
// Exit even if the plugin left timers or handles behind: the frames are flushed.
process.exit(code);
