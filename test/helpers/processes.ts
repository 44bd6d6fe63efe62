/** What the operating system says about our children, from /proc (stat parsed by the server's procStat). */
import { readdirSync, readFileSync } from "node:fs";
import { procStat } from "../../server/process/proc.ts";

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  cmdline: string;
}

function read(pid: number): ProcInfo | undefined {
  const stat = procStat(pid);
  if (!stat) return undefined;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
    return { pid, state: stat.state, ppid: stat.ppid, pgid: stat.pgid, cmdline };
  } catch {
    return undefined;
  }
}

export function processes(): ProcInfo[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => read(Number(name)))
    .filter((p): p is ProcInfo => p !== undefined);
}

/**
 * Whether a command line is a plugin child's: a runtime on one of the SDK's adapters, or
 * on the Node adapter as the server builds it (server/process/node-entry.ts).
 */
export function isPluginChild(cmdline: string): boolean {
  return cmdline.includes("sdk/adapters/") || cmdline.includes(".cache/plinth/node-child-");
}

/** Live plugin children of `pid`, and every process in their groups. */
export function pluginChildren(pid: number): ProcInfo[] {
  const all = processes().filter((p) => p.state !== "Z");
  const leaders = new Set(all.filter((p) => p.ppid === pid && isPluginChild(p.cmdline)).map((p) => p.pid));
  return all.filter((p) => leaders.has(p.pid) || leaders.has(p.pgid));
}

export function isAlive(pid: number): boolean {
  const state = procStat(pid)?.state;
  return state !== undefined && state !== "Z";
}
