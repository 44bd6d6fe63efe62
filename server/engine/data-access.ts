/**
 * Resolves an action's DataAccess arguments: every one in its own child, all in
 * parallel, innermost first. The first failure cancels the others.
 */
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import type { Value } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { argPath, toValue } from "./args.ts";

export interface ResolvedArgs {
  args: Value[];
  kwargs: Record<string, Value>;
}

/** Calls one data-access function on resolved arguments. */
export type DataAccessCall = (path: string, name: string, args: ResolvedArgs, signal: AbortSignal) => Promise<Value>;

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

export async function resolveArgs(
  args: Arg[],
  kwargs: Record<string, Arg>,
  call: DataAccessCall,
  signal: AbortSignal,
  parent = "",
): Promise<ResolvedArgs> {
  const plain = (arg: Arg) => arg.kind.case !== "dataAccess";
  if (args.every(plain) && Object.values(kwargs).every(plain)) {
    return { args: args.map(toValue), kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, toValue(v)])) };
  }
  const controller = new AbortController();
  const linked = AbortSignal.any([signal, controller.signal]);
  const one = async (arg: Arg, path: string): Promise<Value> => {
    if (arg.kind.case !== "dataAccess") return toValue(arg);
    const access = arg.kind.value;
    const inner = await resolveArgs(access.args, access.kwargs, call, linked, path);
    return call(path, access.name, inner, linked);
  };
  const entries = Object.entries(kwargs);
  const values = await allOrAbort(
    [
      ...args.map((arg, i) => one(arg, argPath.positional(parent, i))),
      ...entries.map(([name, arg]) => one(arg, argPath.keyword(parent, name))),
    ],
    controller,
  );
  return {
    args: values.slice(0, args.length),
    kwargs: Object.fromEntries(entries.map(([name], i) => [name, values[args.length + i]!])),
  };
}
