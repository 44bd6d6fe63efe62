/**
 * One audit line (JSON, through the server's logger) for every call that changes
 * something: who, which method, which model or action, and how it ended — refusals
 * included, so that an unauthenticated attempt is on record too.
 */
import { type CallContext, type ServerMiddleware, Status } from "nice-grpc";
import type { Logger } from "pino";
import type { Caller } from "../engine/caller.ts";
import { toServerError } from "./error-mapper.ts";
import { decodedRequest } from "./raw-request.ts";

const MUTATING = new Set(
  ["CreateInstance", "AddInstance", "UpdateInstance", "DeleteModel", "Fit", "Predict"]
    .map((m) => `/plinth.v1.EngineService/${m}`)
    .concat("/plinth.v1.ActionService/CancelAction"),
);

/** The ids a request or a response names. */
function ids(message: unknown): { modelId?: string; actionId?: string } {
  const m = message as { modelId?: string; actionId?: string; action?: { id?: string; modelId?: string }; model?: { id?: string } } | undefined;
  const modelId = m?.modelId || m?.action?.modelId || m?.model?.id;
  const actionId = m?.actionId || m?.action?.id;
  return { ...(modelId ? { modelId } : {}), ...(actionId ? { actionId } : {}) };
}

/** The audit line of a call refused before it reached the call stack (the HTTP listener's check on its headers). */
export function auditRefusal(
  logger: Logger,
  identify: (metadata: CallContext["metadata"]) => Caller | undefined,
  method: string,
  metadata: CallContext["metadata"],
  error: unknown,
): void {
  if (!MUTATING.has(method)) return;
  const status = toServerError(error, logger, method);
  logger.info({ audit: true, caller: identify(metadata)?.name ?? "", method, outcome: Status[status.code], message: status.details }, "audit");
}

export function audit(logger: Logger, identify: (metadata: CallContext["metadata"]) => Caller | undefined): ServerMiddleware {
  return async function* auditCall(call, context) {
    const method = call.method.path;
    if (!MUTATING.has(method)) return yield* call.next(call.request, context);
    const caller = identify(context.metadata)?.name ?? "";
    // Decoded only once the caller is authorized (raw-request.ts): read at the end.
    const request = () => (call.requestStream ? undefined : ids(decodedRequest(call.request)));
    try {
      const response = yield* call.next(call.request, context);
      logger.info({ audit: true, caller, method, ...request(), ...ids(response), outcome: "OK" }, "audit");
      return response;
    } catch (error) {
      const status = toServerError(error, logger, method);
      logger.info({ audit: true, caller, method, ...request(), outcome: Status[status.code], message: status.details }, "audit");
      throw status;
    }
  };
}
