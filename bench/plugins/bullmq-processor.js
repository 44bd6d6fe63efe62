/**
 * BullMQ's sandboxed processor for `npm run bench:peer`: the jobs of bench/plugins/trivial.ts,
 * run by BullMQ in its child processes. Plain JavaScript, as a BullMQ deployment ships it
 * (its children run without tsx).
 */
export default async function peerJob(job, _token, signal) {
  if (job.name !== "poll") return job.data; // "echo": bench.Trivial
  // bench.Poller: reports its child's pid, then looks at its signal every 10 ms.
  await job.updateProgress({ pid: process.pid });
  while (!signal?.aborted) await new Promise((resolve) => setTimeout(resolve, 10));
  throw new Error(`cancelled: ${signal.reason}`);
}
