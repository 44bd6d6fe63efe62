/** Starting servers as separate processes for the benchmarks. */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

/**
 * Runs `node --import tsx <args>` in the repository and resolves once its stdout
 * matches `ready`, with the first capture group as the port when there is one.
 */
export function startProcess(
  args: string[],
  ready: RegExp,
  cwd = root,
): Promise<{ child: ChildProcess; port: number; groups: string[]; output: () => string }> {
  // PLINTH_BENCH_NODE_ARGS: extra node flags for the servers, e.g. --cpu-prof to profile them.
  const extra = process.env.PLINTH_BENCH_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...extra, "--import", "tsx", ...args], { cwd, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = ready.exec(out);
      if (!match) return;
      // Later output (log lines, one audit line per call) is drained unread: matching it
      // all again at every chunk would put this client's own cost in the figures.
      child.stdout!.off("data", onData);
      child.stdout!.resume();
      resolve({ child, port: Number(match[1] ?? 0), groups: match.slice(1), output: () => out });
    };
    child.stdout!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}:\n${out}`)));
  });
}
