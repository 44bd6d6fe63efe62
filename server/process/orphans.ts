/**
 * Children of a server that died (SIGKILL, power loss) lead their own process groups
 * and may run on, and so may what they started. At the next start — the store lock
 * proves that the previous server of this database is gone — two nets catch them: the
 * store records every child's pid and start time (one that still runs is killed with
 * its group), and every process a child started carries its mark (PLINTH_CHILD =
 * <store id>.<run>.<n>): any with this store's id and another run's is killed — but
 * for the runs of the other live servers of a cluster, which share the store.
 */
import type { Logger } from "pino";
import { allProcesses, markedProcesses, markOf, procStat, signalOwned } from "./proc.ts";
import type { ProcessManager } from "./process-manager.ts";

/** What the store offers for this. */
export interface ChildRecords {
  trackChild(child: { pid: number; startTicks: string }): Promise<void>;
  untrackChild(pid: number): Promise<void>;
  trackedChildren(): Promise<{ pid: number; startTicks: string }[]>;
  clearTrackedChildren(): Promise<void>;
  /** The marks of other live servers of this store (a cluster): theirs are not orphans. */
  liveOwners?(): Promise<string[]>;
}

/** Kills what a dead server of this store left running; returns the pids killed. */
export async function reapOrphans(records: ChildRecords & { id: string; owner: string }, logger: Logger): Promise<number[]> {
  const killed: number[] = [];
  for (const child of await records.trackedChildren()) {
    const stat = procStat(child.pid);
    if (!stat || stat.startTicks !== child.startTicks || stat.state === "Z") continue;
    signalOwned(-child.pid, "SIGKILL");
    killed.push(child.pid);
  }
  await records.clearTrackedChildren();
  const live = [records.owner, ...((await records.liveOwners?.()) ?? [])].map((owner) => `${owner}.`);
  for (const pid of markedProcesses(records.id, allProcesses())) {
    const mark = markOf(pid);
    if (live.some((owner) => mark?.startsWith(owner))) continue;
    signalOwned(pid, "SIGKILL");
    killed.push(pid);
  }
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
