/**
 * The first message to the plugin's thread, made without loading the protocol code:
 * the adapters start the thread with it before anything else, so that the plugin
 * loads while the main thread loads its own part.
 * @module
 */
import type { ToThread } from "./thread.ts";

/** Shared state, by index: 1 once the current call is cancelled (the main thread resets it per call)... @internal */
export const THREAD_CANCELLED = 0;
/**
 * ...the number of the call that runs, 0 when none (set by the main thread as it passes
 * one; cleared by the plugin thread as that call ends, only if no later call was passed
 * meanwhile: two calls can come in one read, the second before the first has ended)... @internal
 */
export const THREAD_BUSY = 1;
/** ...1 when the main thread wants a "done" message as the call ends (it is about to exit). @internal */
export const THREAD_NOTIFY = 2;

/** The start message and the state it shares with the thread. @internal */
export function threadStart(
  moduleUrl: string,
  runtime: "node" | "deno",
  pid: number,
  progressIntervalMs: number,
  residentBytes: number,
): { message: Extract<ToThread, { type: "start" }>; state: Int32Array } {
  const state = new Int32Array(new SharedArrayBuffer(12));
  return { message: { type: "start", moduleUrl, runtime, pid, progressIntervalMs, residentBytes, state }, state };
}
