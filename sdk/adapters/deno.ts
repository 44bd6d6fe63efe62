/**
 * The child's entry point on Deno: `deno run sdk/adapters/deno.ts <plugin module> [max frame bytes] [progress interval ms]`.
 * Keeps the real stdout for protocol frames; the plugin runs in a worker
 * (deno-thread.ts) whose console and Deno.stdout go to stderr, so nothing a plugin
 * prints can corrupt the channel.
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

await serveWorker(`file://${modulePath.split("/").map(encodeURIComponent).join("/")}`, {
  runtime: "deno",
  pid: Deno.pid,
  input: Deno.stdin.readable,
  write: (bytes) => frames.write(bytes),
  onTerminate: (listener) => Deno.addSignalListener("SIGTERM", listener),
  startThread: () => {
    const worker = new Worker(new URL("./deno-thread.ts", import.meta.url).href, { type: "module" });
    return {
      post: (message, transfer) => worker.postMessage(message, transfer ?? []),
      onMessage: (listener) => worker.addEventListener("message", (event) => listener(event.data)),
      onError: (listener) =>
        worker.addEventListener("error", (event) => {
          event.preventDefault();
          listener(new Error(event.message));
        }),
    };
  },
  exit: (code) => Deno.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
  progressIntervalMs: Number(progressIntervalMs ?? 50),
});
