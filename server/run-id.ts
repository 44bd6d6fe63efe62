/** Random ids: for stores, and for this server run (drawn once per process). */

export function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const run = randomHex(4);

/** This server run's id: action and model ids end with it, and its children's marks carry it. */
export function runId(): string {
  return run;
}
