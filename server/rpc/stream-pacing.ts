/**
 * One message at a time per gRPC server stream. grpc-js queues a stream's messages
 * (16 before nice-grpc waits) and hands them to HTTP/2 one by one, each once the last one's
 * write has completed: about one event-loop turn a message per stream. With many streams on
 * one connection under load, WatchState's changes waited there for hundreds of milliseconds,
 * stale behind newer ones of the same action. Paced, a stream takes its next message from its
 * source (the watch queue, which keeps only the latest change of each action) only once
 * grpc-js took the one before to write it: at most one written and one waiting, and
 * everything newer still coalesces where it can.
 *
 * grpc-js says when it takes a message by serializing it (the write completes, the next one
 * goes): the message travels wrapped as a Paced, which the service definition's serializer
 * unwraps (service-definition.ts); only streams with that serializer may be paced.
 */
import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from "nice-grpc";

/** A stream's message and what to call once grpc-js takes it to write it. */
export class Paced {
  constructor(
    readonly message: unknown,
    readonly taken: () => void,
  ) {}
}

/** The message itself, and grpc-js's taking it told to its stream. */
export function unwrapPaced(value: unknown): unknown {
  if (!(value instanceof Paced)) return value;
  value.taken();
  return value.message;
}

/** A unary call goes straight on: not a generator of its own, which would cost every call its ticks. */
export const paceStreams: ServerMiddleware = <Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) =>
  call.responseStream ? paced(call, context) : call.next(call.request, context);

async function* paced<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
  const source = call.next(call.request, context);
  const aborted = new Promise<void>((resolve) => {
    if (context.signal.aborted) resolve();
    else context.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  let taken: Promise<void> = Promise.resolve();
  try {
    while (true) {
      // The client gone, grpc-js takes nothing more: the source ends on the same signal.
      await Promise.race([taken, aborted]);
      const next = await source.next();
      if (next.done) return next.value;
      let resolve!: () => void;
      taken = new Promise((r) => (resolve = r));
      // nice-grpc writes what it is given; the serializer unwraps it.
      yield new Paced(next.value, resolve) as Res;
    }
  } finally {
    await source.return(undefined as never);
  }
}
