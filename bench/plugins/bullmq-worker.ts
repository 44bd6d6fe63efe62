/**
 * BullMQ's worker process for `npm run bench:peer`, the peer of a Plinth server: jobs of the
 * queue "peer" on the Redis at 127.0.0.1:<argv[2]>, run by bullmq-processor.js in two child
 * processes (concurrency 2, forked, not worker threads), as Plinth's `max_children: 2`.
 *
 * BullMQ cancels a running job only from the worker's own process (`worker.cancelJob`, which
 * aborts the job's signal in its child and keeps the child); a client elsewhere has no API
 * for it, so this process takes job ids to cancel on the Redis channel "peer:cancel".
 */
import { fileURLToPath } from "node:url";
import { Worker } from "bullmq";
import { Redis } from "ioredis";

const port = Number(process.argv[2]);
const connection = { host: "127.0.0.1", port };
const worker = new Worker("peer", fileURLToPath(new URL("./bullmq-processor.js", import.meta.url)), {
  connection,
  concurrency: 2,
  useWorkerThreads: false,
  // Children run plain node (fork passes on this process's flags by default: tsx's loader).
  workerForkOptions: { execArgv: [] },
  // Redis keeps the last 1,000 of each, not every job of the run.
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 1000 },
});
worker.on("error", (error) => console.error("bullmq worker:", error));

const cancels = new Redis(port, "127.0.0.1");
cancels.on("message", (_channel: string, jobId: string) => worker.cancelJob(jobId, "cancelled by the client"));
await cancels.subscribe("peer:cancel");
await worker.waitUntilReady();

process.once("SIGTERM", () => {
  // force: the jobs running are not waited for; their children are killed.
  Promise.all([worker.close(true), cancels.quit()]).then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
process.stdout.write("ready\n");
