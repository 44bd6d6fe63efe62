/** esbuild's service, shared by what the server builds and stopped once none is under way. */
import { stop } from "esbuild";

let running = 0;

/**
 * Runs `task` with esbuild's service process; the last task to end stops it, which would
 * otherwise stay beside the server (its synchronous API, which tsx uses, keeps one of
 * its own in a thread: that one is not stopped).
 */
export async function withEsbuild<T>(task: () => Promise<T>): Promise<T> {
  running++;
  try {
    return await task();
  } finally {
    if (--running === 0) await stop();
  }
}
