/**
 * The plugin's worker on Deno, started by deno.ts. It writes its frames to the real
 * stdout — the protocol channel — so every console method and every way of writing to
 * Deno.stdout is sent to stderr before the plugin loads.
 * @module
 */
/// <reference lib="deno.worker" />
import { runThread } from "../worker/thread.ts";

const encoder = new TextEncoder();
const stderr = Deno.stderr;
// The protocol channel, kept before Deno.stdout is sent to stderr below: only this thread's frames use it.
const stdout = Deno.stdout;
const writeStdout = stdout.writeSync.bind(stdout);
const writeAll = (bytes: Uint8Array) => {
  for (let offset = 0; offset < bytes.byteLength; ) offset += writeStdout(bytes.subarray(offset));
};
const original = globalThis.console;
const err = original.error.bind(original);
const counts = new Map<string, number>();
const timers = new Map<string, number>();
let indent = "";
/** console.error formats like console.log; only where it writes differs. */
const line = (...args: unknown[]) => (indent ? err(indent + Deno.inspect(args.length === 1 ? args[0] : args)) : err(...args));
const console: Console = {
  ...original,
  log: line,
  info: line,
  debug: line,
  warn: line,
  error: line,
  trace: (...args: unknown[]) => line(...args, new Error("trace").stack),
  dir: (value: unknown) => line(Deno.inspect(value, { depth: 4 })),
  dirxml: line,
  table: (data: unknown) => line(Deno.inspect(data, { depth: 2 })),
  assert: (condition?: boolean, ...args: unknown[]) => {
    if (!condition) line("Assertion failed", ...args);
  },
  count: (label = "default") => {
    counts.set(label, (counts.get(label) ?? 0) + 1);
    line(`${label}: ${counts.get(label)}`);
  },
  countReset: (label = "default") => void counts.delete(label),
  time: (label = "default") => void timers.set(label, performance.now()),
  timeLog: (label = "default", ...args: unknown[]) => line(`${label}: ${(performance.now() - (timers.get(label) ?? 0)).toFixed(3)}ms`, ...args),
  timeEnd: (label = "default") => {
    line(`${label}: ${(performance.now() - (timers.get(label) ?? 0)).toFixed(3)}ms`);
    timers.delete(label);
  },
  group: (...label: unknown[]) => {
    if (label.length) line(...label);
    indent += "  ";
  },
  groupCollapsed: (...label: unknown[]) => {
    if (label.length) line(...label);
    indent += "  ";
  },
  groupEnd: () => {
    indent = indent.slice(2);
  },
  clear: () => {},
};
globalThis.console = console;
Object.defineProperty(Deno.stdout, "write", { value: (bytes: Uint8Array) => stderr.write(bytes) });
Object.defineProperty(Deno.stdout, "writeSync", { value: (bytes: Uint8Array) => stderr.writeSync(bytes) });
Object.defineProperty(Deno.stdout, "writable", { get: () => stderr.writable });

runThread({
  post: (message) => self.postMessage(message),
  writeSync: writeAll,
  onMessage: (listener) => self.addEventListener("message", (event) => listener((event as MessageEvent).data)),
  logLine: (text) => stderr.writeSync(encoder.encode(`${text}\n`)),
});
