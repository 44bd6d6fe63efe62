/**
 * Resolves an action's DataAccess arguments: every one in its own child, all in
 * parallel, innermost first. The first failure cancels the others.
 */
import type { PluginCall } from "../process/process-manager.ts";
import type { ArgNode, CallArgs, DataAccessNode } from "./args.ts";
import { type Payload, toWorkerValue } from "./payloads.ts";

/** Arguments with every DataAccess replaced by its result, as the pipe protocol carries them. */
export type ResolvedArgs = Pick<PluginCall, "args" | "kwargs">;

/** Calls one data-access function on its resolved arguments. */
export type DataAccessCall = (node: DataAccessNode, args: ResolvedArgs, signal: AbortSignal) => Promise<Payload>;

/** Settles every promise; if any failed, aborts the rest first and rethrows the first failure. */
async function allOrAbort<T>(promises: Promise<T>[], controller: AbortController): Promise<T[]> {
  let first: { error: unknown } | undefined;
  const settled = await Promise.all(
    promises.map((p) =>
      p.catch((error: unknown) => {
        first ??= { error };
        controller.abort(error);
        return undefined as T;
      }),
    ),
  );
  if (first) throw first.error;
  return settled;
}

/** Aborts `controller` when `signal` does; the listener goes once the work is done. */
function linked(signal: AbortSignal, controller: AbortController): () => void {
  const onAbort = () => controller.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

export async function resolveArgs(call: CallArgs, run: DataAccessCall, signal: AbortSignal): Promise<ResolvedArgs> {
  const plain = (node: ArgNode): node is Payload => node.kind !== "data_access";
  const entries = Object.entries(call.kwargs);
  if (call.args.every(plain) && entries.every(([, node]) => plain(node))) {
    const kwargs: ResolvedArgs["kwargs"] = {};
    for (const [name, node] of entries) kwargs[name] = toWorkerValue(node as Payload);
    return { args: (call.args as Payload[]).map(toWorkerValue), kwargs };
  }
  const controller = new AbortController();
  const unlink = linked(signal, controller);
  try {
    const one = async (node: ArgNode) => {
      if (plain(node)) return toWorkerValue(node);
      const inner = await resolveArgs(node, run, controller.signal);
      return toWorkerValue(await run(node, inner, controller.signal));
    };
    const values = await allOrAbort([...call.args.map(one), ...entries.map(([, node]) => one(node))], controller);
    const kwargs: ResolvedArgs["kwargs"] = {};
    entries.forEach(([name], i) => {
      kwargs[name] = values[call.args.length + i]!;
    });
    return { args: values.slice(0, call.args.length), kwargs };
  } finally {
    unlink();
  }
}
