/**
 * Ids that sort in creation order (a time part, then a counter), so stores can page
 * by id, with a tail drawn once per server run so that ids from different runs never
 * collide.
 */
import { runId } from "../run-id.ts";

const run = runId();
let last = 0;
let seq = 0;

export function newId(prefix: string): string {
  const now = Date.now();
  seq = now === last ? seq + 1 : 0;
  last = now;
  return `${prefix}-${now.toString(36).padStart(9, "0")}${seq.toString(36).padStart(3, "0")}${run}`;
}
