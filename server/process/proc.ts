/** What Linux's /proc says about a process. */
import { readFileSync } from "node:fs";

export interface ProcStat {
  /** R, S, D, Z, X, … */
  state: string;
  ppid: number;
  pgid: number;
  /** Start time in clock ticks since boot: with the pid, names one process for good. */
  startTicks: string;
}

/** undefined when there is no such process. */
export function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may itself hold spaces or parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 of stat(5): state; ppid is field 4, pgrp field 5, starttime field 22.
  return { state: fields[0]!, ppid: Number(fields[1]), pgid: Number(fields[2]), startTicks: fields[19]! };
}
