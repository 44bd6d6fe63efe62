/** What the operating system says about our children, from /proc. */
import { readdirSync, readFileSync } from "node:fs";

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  state: string;
  cmdline: string;
}

function read(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name is in parentheses and may itself hold spaces or parentheses.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
    return { pid, state: rest[0]!, ppid: Number(rest[1]), pgid: Number(rest[2]), cmdline };
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

/** Live plugin children of `pid` (sdk/adapters on their command line), and every process in their groups. */
export function pluginChildren(pid: number): ProcInfo[] {
  const all = processes().filter((p) => p.state !== "Z");
  const leaders = new Set(all.filter((p) => p.ppid === pid && p.cmdline.includes("sdk/adapters/")).map((p) => p.pid));
  return all.filter((p) => leaders.has(p.pid) || leaders.has(p.pgid));
}

/** Live processes whose command line contains `needle`. */
export function findProcesses(needle: string): ProcInfo[] {
  return processes().filter((p) => p.state !== "Z" && p.cmdline.includes(needle));
}

export function isAlive(pid: number): boolean {
  const info = read(pid);
  return info !== undefined && info.state !== "Z";
}
