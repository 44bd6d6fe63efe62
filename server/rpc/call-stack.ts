/**
 * What every call goes through, whichever protocol brought it (gRPC on the gRPC port,
 * Connect and gRPC-Web on the HTTP one): errors mapped to statuses, an audit line, the
 * caller identified and authorized, open streams counted per caller, and only then the
 * request decoded (a gRPC request comes as its bytes: raw-request.ts; the HTTP listener
 * checks the caller and the request's cost before Connect decodes it). Made once, so
 * that a caller's streams are counted across both listeners.
 *
 * All of it is one middleware, one async generator: nested ones cost every call a
 * generator and its promise ticks each.
 */

import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from "nice-grpc";
import type { Logger } from "pino";
import type { Caller } from "../engine/caller.ts";
import { auditAnswer, auditFailure, auditRefusal, isAudited } from "./audit.ts";
import { type Authenticator, type AuthOptions, authenticator } from "./auth.ts";
import { toServerError } from "./error-mapper.ts";
import { RawRequest } from "./raw-request.ts";
import { streamLimit } from "./stream-limit.ts";

/** Told when each call starts and ends. */
export interface CallCounter {
  start(): void;
  end(): void;
}

export interface CallStack {
  readonly auth: Authenticator;
  readonly middleware: ServerMiddleware<{ caller: Caller }>;
  /** The same middleware, telling `calls` when each call starts and ends (the gRPC port drains its calls to stop). */
  counted(calls: CallCounter): ServerMiddleware<{ caller: Caller }>;
  /** Values one request may hold (server.limits.max_request_values). */
  readonly maxRequestValues: number;
  /**
   * What the stack's authorization would say of a call of `path` with this metadata, for a
   * transport that can check it before reading the request: throws (with an audit line) when refused.
   */
  admit(path: string, metadata: CallContext["metadata"]): void;
}

export interface CallStackOptions {
  logger: Logger;
  auth?: AuthOptions | undefined;
  mutualTls: boolean;
  streamsPerCaller: number;
  maxRequestValues: number;
}

export function callStack(options: CallStackOptions): CallStack {
  const { logger, maxRequestValues } = options;
  const auth = authenticator(options.auth, options.mutualTls);
  const streams = streamLimit(options.streamsPerCaller);

  const through = (calls?: CallCounter): ServerMiddleware<{ caller: Caller }> =>
    async function* stack<Req, Res>(call: ServerMiddlewareCall<Req, Res, { caller: Caller }>, context: CallContext) {
      calls?.start();
      const method = call.method.path;
      const audited = isAudited(method);
      let name = "";
      try {
        // The audit line names whom the metadata shows, refused or not: authenticated once for both.
        const shown = audited && auth.enabled ? auth.authenticate(context.metadata) : undefined;
        if (typeof shown === "object") name = shown.name;
        const caller = auth.authorize(method, context.metadata, shown);
        const close = call.responseStream ? streams.open(caller, context.peer) : undefined;
        try {
          const request = RawRequest.is(call.request) ? call.request.decode(maxRequestValues) : call.request;
          const response = yield* call.next(request as Req, { ...context, caller });
          if (audited) auditAnswer(logger, name, method, call.request, response);
          return response;
        } finally {
          close?.();
        }
      } catch (error) {
        const status = toServerError(error, logger, method);
        if (audited) auditFailure(logger, name, method, call.request, status);
        throw status;
      } finally {
        calls?.end();
      }
    };

  const admit = (path: string, metadata: CallContext["metadata"]) => {
    try {
      auth.authorize(path, metadata);
    } catch (error) {
      auditRefusal(logger, auth.identify, path, metadata, error);
      throw error;
    }
  };
  return { auth, middleware: through(), counted: through, maxRequestValues, admit };
}
