/**
 * The child's entry point on Deno: `deno run sdk/adapters/deno.ts <plugin module> [max frame bytes] [progress interval ms]`.
 * Keeps the real stdout for protocol frames and sends console output to stderr, so
 * console.log in a plugin cannot corrupt the channel.
 * @module
 */
import { serveWorker } from "../worker/serve.ts";

const [modulePath, maxFrameBytes, progressIntervalMs] = Deno.args;
if (!modulePath?.startsWith("/")) {
  console.error("usage: deno run sdk/adapters/deno.ts <absolute path of the plugin module> [max frame bytes] [progress interval ms]");
  Deno.exit(2);
}

const toStderr = console.error.bind(console);
console.log = console.info = console.debug = toStderr;
const frames = Deno.stdout.writable.getWriter();
const encoder = new TextEncoder();

const code = await serveWorker(`file://${modulePath.split("/").map(encodeURIComponent).join("/")}`, {
  runtime: "deno",
  pid: Deno.pid,
  input: Deno.stdin.readable,
  write: (bytes) => frames.write(bytes),
  onTerminate: (listener) => Deno.addSignalListener("SIGTERM", listener),
  logLine: (line) => Deno.stderr.writeSync(encoder.encode(`${line}\n`)),
  exit: (code) => Deno.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
  progressIntervalMs: Number(progressIntervalMs ?? 50),
});
Deno.exit(code);
