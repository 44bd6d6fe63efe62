/**
 * A point where tests stop the server: with PLINTH_TEST_STOP_AFTER_REVISION=<n> in its
 * environment, the server process stops itself (SIGSTOP) as soon as a store has committed
 * a model's revision n, so that a test can kill it, or restart its database, right after
 * that commit, without racing it. Unset (outside tests), it does nothing.
 */
const at = process.env.PLINTH_TEST_STOP_AFTER_REVISION;
const revision = at && /^\d+$/.test(at) ? BigInt(at) : undefined;

/** Told by a store that a model's revision is committed. */
export function revisionCommitted(committed: bigint): void {
  if (committed === revision) process.kill(process.pid, "SIGSTOP");
}
