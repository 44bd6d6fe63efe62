/**
 * The child's entry point on Deno: `deno run sdk/adapters/deno.ts <plugin module> [max frame bytes] [progress interval ms] [resident bytes]`.
 * Keeps the real stdout for protocol frames; the plugin runs in a worker
 * (deno-thread.ts), started first so that it loads while this thread does, whose
 * console and Deno.stdout go to stderr: nothing a plugin prints can corrupt the channel.
 * It keeps up to `resident bytes` of instances between calls (../worker/residents.ts);
 * 0 or none keeps nothing.
 * @module
 */
import { threadStart } from "../worker/thread-start.ts";

const [modulePath, maxFrameBytes, progressIntervalMs, residentBytes] = Deno.args;
const residentBudget = Number(residentBytes ?? 0);
if (!modulePath?.startsWith("/") || !(residentBudget >= 0)) {
  console.error(
    "usage: deno run sdk/adapters/deno.ts <absolute path of the plugin module> [max frame bytes] [progress interval ms] [resident bytes]",
  );
  Deno.exit(2);
}

const moduleUrl = `file://${modulePath.split("/").map(encodeURIComponent).join("/")}`;
const start = threadStart(moduleUrl, "deno", Deno.pid, Number(progressIntervalMs ?? 50), residentBudget);
// Beside this file: deno-thread.ts in the sources, deno-thread.mjs in the package's build (dist/).
const thread = import.meta.url.endsWith(".mjs") ? "./deno-thread.mjs" : "./deno-thread.ts";
const worker = new Worker(new URL(thread, import.meta.url).href, { type: "module" });
worker.postMessage(start.message);

const toStderr = console.error.bind(console);
console.log = console.info = console.debug = toStderr;
const frames = Deno.stdout.writable.getWriter();

const { serveWorker } = await import("../worker/serve.ts");
await serveWorker({
  input: Deno.stdin.readable,
  write: (bytes) => frames.write(bytes),
  onTerminate: (listener) => Deno.addSignalListener("SIGTERM", listener),
  thread: {
    post: (message, transfer) => worker.postMessage(message, transfer ?? []),
    onMessage: (listener) => worker.addEventListener("message", (event) => listener(event.data)),
    onError: (listener) =>
      worker.addEventListener("error", (event) => {
        event.preventDefault();
        listener(new Error(event.message));
      }),
  },
  state: start.state,
  exit: (code) => Deno.exit(code),
  maxFrameBytes: Number(maxFrameBytes ?? 64 * 1024 * 1024),
});
