/**
 * What every call goes through, whichever protocol brought it (gRPC on the gRPC port,
 * Connect and gRPC-Web on the HTTP one): errors mapped to statuses, an audit line, the
 * caller identified and authorized, open streams counted per caller, and only then the
 * request decoded (a gRPC request comes as its bytes: raw-request.ts; the HTTP listener
 * checks the caller and the request's cost before Connect decodes it). Made once, so
 * that a caller's streams are counted across both listeners.
 */

import type { CallContext } from "nice-grpc";
import { composeServerMiddleware, type ServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import type { Caller } from "../engine/caller.ts";
import { audit, auditRefusal } from "./audit.ts";
import { type Authenticator, type AuthOptions, authenticator } from "./auth.ts";
import { errorMapper } from "./error-mapper.ts";
import { decodeRequests } from "./raw-request.ts";
import { streamLimit } from "./stream-limit.ts";

export interface CallStack {
  readonly auth: Authenticator;
  readonly middleware: ServerMiddleware<{ caller: Caller }>;
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
  const auth = authenticator(options.auth, options.mutualTls);
  const audited = composeServerMiddleware<object, object, object>(errorMapper(options.logger), audit(options.logger, auth.identify));
  const authorized = composeServerMiddleware<object, { caller: Caller }, object>(audited, auth.middleware);
  const limited = composeServerMiddleware<{ caller: Caller }, object, object>(authorized, streamLimit(options.streamsPerCaller));
  const middleware = composeServerMiddleware<{ caller: Caller }, object, object>(limited, decodeRequests(options.maxRequestValues));
  const admit = (path: string, metadata: CallContext["metadata"]) => {
    try {
      auth.authorize(path, metadata);
    } catch (error) {
      auditRefusal(options.logger, auth.identify, path, metadata, error);
      throw error;
    }
  };
  return { auth, middleware, maxRequestValues: options.maxRequestValues, admit };
}
