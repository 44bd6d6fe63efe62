/** What Linux's /proc says about a process. */
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";

export interface ProcStat {
  /** R, S, D, Z, X, … */
  state: string;
  ppid: number;
  pgid: number;
  /** Start time in clock ticks since boot: with the pid, names one process for good. */
  startTicks: string;
  /** CPU time used, user and system, in clock ticks. */
  cpuTicks: number;
}

/**
 * A /proc file kept open and read again from its start: one pread where a readFileSync
 * makes four system calls, on paths the server takes for every call. An open
 * /proc/<pid>/stat stays the process's own: once it is gone, reading fails even if the
 * pid is given out again.
 */
export class ProcFile {
  #fd: number | undefined;
  readonly #buffer = Buffer.allocUnsafe(4096);

  constructor(path: string) {
    try {
      this.#fd = openSync(path, "r");
    } catch {
      this.#fd = undefined;
    }
  }

  /** Its contents now; undefined once closed, or when the process it describes is gone. */
  read(): string | undefined {
    if (this.#fd === undefined) return undefined;
    try {
      return this.#buffer.toString("latin1", 0, readSync(this.#fd, this.#buffer, 0, this.#buffer.length, 0));
    } catch {
      return undefined;
    }
  }

  /** A process's state from this file: procStat's, through the open file. */
  stat(): ProcStat | undefined {
    const text = this.read();
    return text === undefined ? undefined : parseStat(text);
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

/** undefined when there is no such process. */
export function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  return parseStat(stat);
}

function parseStat(stat: string): ProcStat {
  // The command name is in parentheses and may itself hold spaces or parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 of stat(5): state; ppid is field 4, pgrp field 5, utime and stime
  // fields 14 and 15, starttime field 22.
  return {
    state: fields[0]!,
    ppid: Number(fields[1]),
    pgid: Number(fields[2]),
    startTicks: fields[19]!,
    cpuTicks: Number(fields[11]) + Number(fields[12]),
  };
}

/** Whether a process of this host is alive: there, and not a zombie. */
export function processAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** The environment variable that marks every process a plugin child starts, and the child itself. */
export const MARK_VARIABLE = "PLINTH_CHILD";

/** Every process now, by pid, with its parent. */
export function allProcesses(): Map<number, ProcStat> {
  const all = new Map<number, ProcStat>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = procStat(Number(name));
    if (stat) all.set(Number(name), stat);
  }
  return all;
}

/**
 * Every process now, as allProcesses, read without holding up the event loop: the server
 * goes on answering while it looks (a scan of a busy machine's /proc takes milliseconds).
 */
export async function allProcessesAsync(): Promise<Map<number, ProcStat>> {
  const all = new Map<number, ProcStat>();
  const pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name)).map(Number);
  await Promise.all(
    pids.map(async (pid) => {
      try {
        all.set(pid, parseStat(await readFile(`/proc/${pid}/stat`, "utf8")));
      } catch {
        // Gone meanwhile.
      }
    }),
  );
  return all;
}

/**
 * As markedProcesses, read without holding up the event loop, and looking only at the
 * processes started since `since` (start ticks): a process that carries a child's mark
 * started after the child did.
 */
export async function markedProcessesAsync(mark: string, all: Map<number, ProcStat>, since?: string): Promise<number[]> {
  const after = since === undefined ? 0 : Number(since);
  const candidates = [...all].filter(([pid, stat]) => stat.state !== "Z" && pid !== process.pid && Number(stat.startTicks) >= after);
  const found = await Promise.all(candidates.map(async ([pid]) => (hasMark(await markOfAsync(pid), mark) ? pid : undefined)));
  return found.filter((pid) => pid !== undefined);
}

/** The processes below `root` in the process tree, deepest last. */
export function treeBelow(root: number, all = allProcesses()): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, stat] of all) {
    const list = children.get(stat.ppid);
    if (list) list.push(pid);
    else children.set(stat.ppid, [pid]);
  }
  const found: number[] = [];
  const visit = (pid: number) => {
    for (const child of children.get(pid) ?? []) {
      found.push(child);
      visit(child);
    }
  };
  visit(root);
  return found;
}

/** The pids of every process now, and the last pid the kernel gave out before they were listed. */
export interface PidSnapshot {
  last: number;
  pids: Set<number>;
}

/**
 * The last pid the kernel gave out (to a process or a thread), from /proc/loadavg: one
 * small read. While it stays the same, no process has been started. NaN if unreadable.
 */
export function lastPid(): number {
  loadavg ??= new ProcFile("/proc/loadavg");
  const text = loadavg.read();
  return text === undefined ? Number.NaN : Number(text.trim().split(" ").pop());
}
let loadavg: ProcFile | undefined;

/** Every pid now: one readdir, no file read. */
export function pidSnapshot(): PidSnapshot {
  const last = lastPid();
  const pids = new Set<number>();
  for (const name of readdirSync("/proc")) if (/^\d+$/.test(name)) pids.add(Number(name));
  return { last, pids };
}

/** Whether `pid` is below `root` in the process tree now. */
export function isBelow(pid: number, root: number): boolean {
  // Bounded, in case the tree changes under us as we walk it.
  for (let depth = 0, current = procStat(pid)?.ppid; current !== undefined && current > 1 && depth < 64; depth++) {
    if (current === root) return true;
    current = procStat(current)?.ppid;
  }
  return false;
}

/** A process's command line; empty when it is gone or unreadable. */
export function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  } catch {
    return [];
  }
}

/** Whether a mark is `mark` or one of its sub-marks (`mark.` followed by more). */
export function hasMark(value: string | undefined, mark: string): boolean {
  return value !== undefined && (value === mark || value.startsWith(`${mark}.`));
}

/** The value of MARK_VARIABLE in a process's environment; undefined when unset or unreadable. */
export function markOf(pid: number): string | undefined {
  let environ: Buffer;
  try {
    environ = readFileSync(`/proc/${pid}/environ`);
  } catch {
    return undefined;
  }
  return markIn(environ);
}

async function markOfAsync(pid: number): Promise<string | undefined> {
  try {
    return markIn(await readFile(`/proc/${pid}/environ`));
  } catch {
    return undefined;
  }
}

function markIn(environ: Buffer): string | undefined {
  const key = Buffer.from(`${MARK_VARIABLE}=`);
  for (let start = 0; start < environ.length; ) {
    const end = environ.indexOf(0, start);
    const stop = end < 0 ? environ.length : end;
    if (environ.subarray(start, start + key.length).equals(key)) return environ.subarray(start + key.length, stop).toString();
    start = stop + 1;
  }
  return undefined;
}

/** Live processes (not zombies) whose mark is `mark`, or starts with `mark` followed by ".". */
export function markedProcesses(mark: string, all = allProcesses()): number[] {
  const found: number[] = [];
  for (const [pid, stat] of all) {
    if (stat.state === "Z" || pid === process.pid) continue;
    if (hasMark(markOf(pid), mark)) found.push(pid);
  }
  return found;
}

/**
 * Sends `signal` to a process or group (negative pid) that this server owns: never to
 * pid 0, 1, -1 or itself, and an error (gone already) is not one.
 */
export function signalOwned(pid: number, signal: NodeJS.Signals): void {
  if (Math.abs(pid) <= 1 || Math.abs(pid) === process.pid) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}
