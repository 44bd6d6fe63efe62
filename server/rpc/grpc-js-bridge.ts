/**
 * grpc-health-check and @grpc/reflection register callback-style handlers on a
 * grpc-js Server (`addService`); nice-grpc owns its grpc-js Server and wants
 * promise and iterator handlers. This bridge adapts the first to the second, for
 * the call shapes those libraries use: unary, server streaming and bidi streaming
 * with synchronous writes. Their requests, too, are decoded only after the call stack
 * has authorized the caller (raw-request.ts), and bytes their decoder refuses are
 * INVALID_ARGUMENT.
 */
import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import { type CallContext, type Server, ServerError, Status } from "nice-grpc";
import { RawRequest } from "./raw-request.ts";

type Handler = (call: FakeCall, callback?: (error: grpc.ServiceError | null, value?: unknown) => void) => void;

/** The parts of a grpc-js call object those libraries touch. */
class FakeCall extends EventEmitter {
  readonly request: unknown;
  readonly metadata: grpc.Metadata;
  cancelled = false;
  readonly #write: (value: unknown) => void;
  readonly #end: () => void;

  constructor(request: unknown, context: CallContext, write: (value: unknown) => void, end: () => void) {
    super();
    this.request = request;
    this.metadata = context.metadata as unknown as grpc.Metadata;
    this.#write = write;
    this.#end = end;
  }

  write(value: unknown): boolean {
    this.#write(value);
    return true;
  }

  end(): void {
    this.#end();
  }

  getPeer(): string {
    return "";
  }
}

function toServerError(error: grpc.ServiceError): ServerError {
  return new ServerError(error.code ?? Status.UNKNOWN, error.details ?? error.message);
}

/**
 * Yields what the handler writes until it ends the call or the client goes away; throws
 * what `start` reports through `fail`.
 */
async function* drain(
  start: (call: (request: unknown) => FakeCall, fail: (error: unknown) => void) => void,
  context: CallContext,
): AsyncGenerator<unknown> {
  const queue: unknown[] = [];
  let ended = false;
  let failed: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const calls: FakeCall[] = [];
  const onAbort = () => {
    for (const call of calls) {
      call.cancelled = true;
      call.emit("cancelled");
    }
    wake?.();
  };
  context.signal.addEventListener("abort", onAbort, { once: true });
  const fail = (error: unknown) => {
    failed ??= { error };
    wake?.();
  };
  start((request) => {
    const call = new FakeCall(
      request,
      context,
      (value) => {
        queue.push(value);
        wake?.();
      },
      () => {
        ended = true;
        wake?.();
      },
    );
    calls.push(call);
    return call;
  }, fail);
  try {
    while (!context.signal.aborted) {
      if (failed) throw failed.error;
      if (queue.length > 0) yield queue.shift();
      else if (ended) return;
      else await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    context.signal.removeEventListener("abort", onAbort);
    if (!context.signal.aborted) onAbort();
  }
}

export function grpcJsBridge(server: Server): Pick<grpc.Server, "addService"> {
  return {
    addService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation) {
      const adapted: Record<string, unknown> = {};
      for (const [key, method] of Object.entries(definition)) {
        const handler = (implementation[key] ?? implementation[method.originalName ?? ""]) as unknown as Handler | undefined;
        if (!handler) continue;
        if (!method.requestStream && !method.responseStream) {
          adapted[key] = (request: unknown, context: CallContext) =>
            new Promise((resolve, reject) => {
              handler(
                new FakeCall(
                  request,
                  context,
                  () => {},
                  () => {},
                ),
                (error, value) => (error ? reject(toServerError(error)) : resolve(value)),
              );
            });
        } else if (!method.requestStream) {
          adapted[key] = (request: unknown, context: CallContext) => drain((makeCall) => handler(makeCall(request)), context);
        } else if (method.responseStream) {
          adapted[key] = (requests: AsyncIterable<unknown>, context: CallContext) =>
            drain((makeCall, fail) => {
              const call = makeCall(undefined);
              handler(call);
              (async () => {
                // Each message of a request stream is decoded here, after the stack authorized the call.
                for await (const request of requests) call.emit("data", RawRequest.is(request) ? request.decode(Number.POSITIVE_INFINITY) : request);
                call.emit("end");
              })().catch(fail);
            }, context);
        }
      }
      // Methods the library does not implement answer UNIMPLEMENTED.
      for (const key of Object.keys(definition)) {
        adapted[key] ??= () => {
          throw new ServerError(Status.UNIMPLEMENTED, `${definition[key]!.path} is not implemented`);
        };
      }
      // Requests stay bytes until the stack has authorized the call.
      const raw: Record<string, unknown> = {};
      for (const [key, method] of Object.entries(definition)) {
        const decode = method.requestDeserialize;
        raw[key] = {
          ...method,
          requestDeserialize: (bytes: Buffer) => new RawRequest(bytes, { typeName: `request of ${method.path}`, decode: (b) => decode(b as Buffer) }),
        };
      }
      server.add(raw as never, adapted as never);
    },
  };
}
