/**
 * One audit line (JSON, through the server's logger) for every call that changes
 * something: who, which method, which model or action, and how it ended — refusals
 * included, so that an unauthenticated attempt is on record too. The call stack
 * (call-stack.ts) writes them.
 */
import { type CallContext, type ServerError, Status } from "nice-grpc";
import type { Logger } from "pino";
import type { Caller } from "../engine/caller.ts";
import { toServerError } from "./error-mapper.ts";
import { decodedRequest } from "./raw-request.ts";

const MUTATING = new Set(
  ["CreateInstance", "AddInstance", "UpdateInstance", "DeleteModel", "Fit", "Predict"]
    .map((m) => `/plinth.v1.EngineService/${m}`)
    .concat("/plinth.v1.ActionService/CancelAction"),
);

/** Whether calls of `method` get an audit line (all of them unary). */
export const isAudited = (method: string): boolean => MUTATING.has(method);

/** The ids a request or a response names. */
function ids(message: unknown): { modelId?: string; actionId?: string } {
  const m = message as { modelId?: string; actionId?: string; action?: { id?: string; modelId?: string }; model?: { id?: string } } | undefined;
  const modelId = m?.modelId || m?.action?.modelId || m?.model?.id;
  const actionId = m?.actionId || m?.action?.id;
  return { ...(modelId ? { modelId } : {}), ...(actionId ? { actionId } : {}) };
}

/**
 * The line of a call that answered. `request` as the stack got it: a gRPC request comes
 * raw and names its ids only once decoded, which is after the caller was authorized.
 */
export function auditAnswer(logger: Logger, caller: string, method: string, request: unknown, response: unknown): void {
  logger.info({ audit: true, caller, method, ...ids(decodedRequest(request)), ...ids(response), outcome: "OK" }, "audit");
}

/** The line of a call that ended with `status`. */
export function auditFailure(logger: Logger, caller: string, method: string, request: unknown, status: ServerError): void {
  logger.info({ audit: true, caller, method, ...ids(decodedRequest(request)), outcome: Status[status.code], message: status.details }, "audit");
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
