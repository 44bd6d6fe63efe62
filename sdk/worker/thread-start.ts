/**
 * The first message to the plugin's thread, made without loading the protocol code:
 * the adapters start the thread with it before anything else, so that the plugin
 * loads while the main thread loads its own part.
 * @module
 */
import type { ToThread } from "./thread.ts";

/** The start message and the cancel flag it shares with the thread. @internal */
export function threadStart(
  moduleUrl: string,
  runtime: "node" | "deno",
  pid: number,
  progressIntervalMs: number,
): { message: Extract<ToThread, { type: "start" }>; cancelled: Int32Array } {
  const cancelled = new Int32Array(new SharedArrayBuffer(4));
  return { message: { type: "start", moduleUrl, runtime, pid, progressIntervalMs, cancelled }, cancelled };
}
