/**
 * The plugin's thread on Node, started by node.ts (through node-thread.mjs). Its
 * console and process.stdout/stderr write straight to the child's stderr, in order
 * and before the call's answer: a worker's own streams would pass through the main
 * thread and could arrive after it.
 * @module
 */
import { writeSync } from "node:fs";
import process from "node:process";
import { parentPort } from "node:worker_threads";
import { runThread } from "../worker/thread.ts";

const toStderr = (chunk: string | Uint8Array, encoding?: unknown, callback?: unknown): boolean => {
  if (typeof chunk === "string") writeSync(2, chunk);
  else writeSync(2, chunk);
  const done = typeof encoding === "function" ? encoding : callback;
  if (typeof done === "function") done();
  return true;
};
process.stdout.write = toStderr as typeof process.stdout.write;
process.stderr.write = toStderr as typeof process.stderr.write;

const port = parentPort!;
runThread({
  post: (message, transfer) => port.postMessage(message, transfer ?? []),
  onMessage: (listener) => port.on("message", listener),
  logLine: (line) => toStderr(`${line}\n`),
});
