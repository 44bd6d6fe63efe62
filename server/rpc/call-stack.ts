/**
 * What every call goes through, whichever protocol brought it (gRPC on the gRPC port,
 * Connect and gRPC-Web on the HTTP one): errors mapped to statuses, an audit line, the
 * caller identified and authorized, open streams counted per caller. Made once, so that
 * a caller's streams are counted across both listeners.
 */
import { composeServerMiddleware, type ServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import type { Caller } from "../engine/caller.ts";
import { audit } from "./audit.ts";
import { type AuthOptions, type Authenticator, authenticator } from "./auth.ts";
import { errorMapper } from "./error-mapper.ts";
import { streamLimit } from "./stream-limit.ts";

export interface CallStack {
  readonly auth: Authenticator;
  readonly middleware: ServerMiddleware<{ caller: Caller }>;
}

export function callStack(options: { logger: Logger; auth?: AuthOptions | undefined; mutualTls: boolean; streamsPerCaller: number }): CallStack {
  const auth = authenticator(options.auth, options.mutualTls);
  const audited = composeServerMiddleware<object, object, object>(errorMapper(options.logger), audit(options.logger, auth.identify));
  const authorized = composeServerMiddleware<object, { caller: Caller }, object>(audited, auth.middleware);
  const middleware = composeServerMiddleware<{ caller: Caller }, object, object>(authorized, streamLimit(options.streamsPerCaller));
  return { auth, middleware };
}
