import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { lastPid, ProcFile } from "../../server/process/proc.ts";

describe("ProcFile: a /proc file kept open", () => {
  it("reads the process's state as it is now, and nothing once the process is gone", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    const stat = new ProcFile(`/proc/${child.pid}/stat`);
    try {
      expect(stat.stat()?.state).toMatch(/^[RS]$/);
      child.kill("SIGSTOP");
      // The kernel stops it on its own clock: wait for it, with no bound of our own.
      while (stat.stat()?.state !== "T") await new Promise((resolve) => setTimeout(resolve, 10));
      child.kill("SIGKILL");
      await once(child, "exit");
      // Reaped: the open file no longer names a process, whatever gets its pid next.
      expect(stat.stat()).toBeUndefined();
    } finally {
      child.kill("SIGKILL");
      stat.close();
    }
  });

  it("lastPid moves when a process is started, read through the same open file", async () => {
    const before = lastPid();
    const child = spawn("true", { stdio: "ignore" });
    await once(child, "exit");
    expect(lastPid()).not.toBe(before);
    expect(lastPid()).toBeGreaterThan(0);
  });
});
