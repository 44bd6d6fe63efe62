/**
 * A request's priority as the engine takes it: 1 (highest) to 5 (lowest), 0 (unset) the
 * default 3. What it orders is the process manager's queue (fair-queue.ts); a model's
 * own line stays in arrival order.
 */
import { invalid } from "../errors.ts";
import { DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY } from "../process/fair-queue.ts";

/** The priority a request asks for, 0 read as the default; INVALID_ARGUMENT naming `field` outside 1–5. */
export function priorityOf(requested: number | undefined, field = "priority"): number {
  if (!requested) return DEFAULT_PRIORITY;
  if (!Number.isInteger(requested) || requested < MIN_PRIORITY || requested > MAX_PRIORITY) {
    throw invalid(
      `${field}: must be between ${MIN_PRIORITY} (highest) and ${MAX_PRIORITY} (lowest), or 0 for the default ${DEFAULT_PRIORITY}; got ${requested}`,
    );
  }
  return requested;
}
