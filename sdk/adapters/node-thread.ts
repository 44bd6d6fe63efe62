/**
 * The plugin's thread on Node, started by node.ts (through node-thread.mjs). It writes
 * its frames straight to fd 1; the plugin's console and process.stdout/stderr go
 * straight to fd 2, in order and before the call's answer.
 * @module
 */
import { writeSync } from "node:fs";
import process from "node:process";
import { parentPort } from "node:worker_threads";
import { runThread } from "../worker/thread.ts";

// A plugin built by the server carries an inline source map: its stack traces name its own
// files and lines (tsx, when it loads the plugin, maps them too).
process.setSourceMapsEnabled(true);

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes all of `bytes` to `fd`. The pipe is non-blocking: a write may take part of
 * them, or none while the pipe is full (EAGAIN), and then this thread waits a
 * millisecond for the server to read.
 */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.byteLength; ) {
    try {
      offset += writeSync(fd, bytes, offset);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

const toStderr = (chunk: string | Uint8Array, encoding?: unknown, callback?: unknown): boolean => {
  writeAll(2, typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  const done = typeof encoding === "function" ? encoding : callback;
  if (typeof done === "function") done();
  return true;
};
process.stdout.write = toStderr as typeof process.stdout.write;
process.stderr.write = toStderr as typeof process.stderr.write;

const port = parentPort!;
runThread({
  post: (message) => port.postMessage(message),
  onMessage: (listener) => port.on("message", listener),
  writeSync: (bytes) => writeAll(1, bytes),
  logLine: (line) => toStderr(`${line}\n`),
});
