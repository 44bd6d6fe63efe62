/**
 * Children of a server that died (SIGKILL, power loss) lead their own process groups
 * and may run on. The store records every child's pid and start time; at the next
 * start, any that still runs (same pid, same start time) is killed with its group.
 */
import type { Logger } from "pino";
import type { ProcessManager } from "./process-manager.ts";
import { procStat } from "./proc.ts";

/** What the store offers for this. */
export interface ChildRecords {
  trackChild(child: { pid: number; startTicks: string }): Promise<void>;
  untrackChild(pid: number): Promise<void>;
  trackedChildren(): Promise<{ pid: number; startTicks: string }[]>;
  clearTrackedChildren(): Promise<void>;
}

/** Kills what a dead server left running; returns the pids killed. */
export async function reapOrphans(records: ChildRecords, logger: Logger): Promise<number[]> {
  const killed: number[] = [];
  for (const child of await records.trackedChildren()) {
    const stat = procStat(child.pid);
    if (!stat || stat.startTicks !== child.startTicks || stat.state === "Z") continue;
    try {
      process.kill(-child.pid, "SIGKILL");
      killed.push(child.pid);
    } catch {
      // Gone in the meantime.
    }
  }
  await records.clearTrackedChildren();
  if (killed.length > 0) logger.warn({ pids: killed }, "killed plugin children left running by a previous server");
  return killed;
}

/** Records every child the manager starts, and forgets it once it has exited. */
export function trackChildren(processes: ProcessManager, records: ChildRecords, logger: Logger): void {
  const failed = (error: unknown) => logger.error({ err: error }, "recording a plugin child failed");
  processes.events.on("spawn", (pid) => {
    const stat = procStat(pid);
    if (stat) records.trackChild({ pid, startTicks: stat.startTicks }).catch(failed);
  });
  processes.events.on("exit", (pid) => void records.untrackChild(pid).catch(failed));
}
