/**
 * The one place where errors become gRPC statuses (the call stack maps every call's
 * error here). Known errors keep their message (it says what to fix); anything unknown is
 * INTERNAL with a generic message and the details in the server log.
 */

import { ServerError, Status } from "nice-grpc";
import type { Logger } from "pino";
import { type ErrorKind, PlinthError } from "../errors.ts";

const statuses: Record<ErrorKind, Status> = {
  invalid_argument: Status.INVALID_ARGUMENT,
  not_found: Status.NOT_FOUND,
  already_exists: Status.ALREADY_EXISTS,
  failed_precondition: Status.FAILED_PRECONDITION,
  queue_full: Status.RESOURCE_EXHAUSTED,
  shutting_down: Status.UNAVAILABLE,
  unavailable: Status.UNAVAILABLE,
  cancelled: Status.CANCELLED,
  deadline_exceeded: Status.DEADLINE_EXCEEDED,
  unauthenticated: Status.UNAUTHENTICATED,
  permission_denied: Status.PERMISSION_DENIED,
  internal: Status.INTERNAL,
};

export function toServerError(error: unknown, logger: Logger, path: string): ServerError {
  if (error instanceof ServerError) return error;
  if (PlinthError.is(error)) return new ServerError(statuses[error.kind], error.message);
  if (error instanceof Error && error.name === "AbortError") return new ServerError(Status.CANCELLED, "the call was cancelled");
  if (error instanceof Error && error.name === "TimeoutError") return new ServerError(Status.DEADLINE_EXCEEDED, "the deadline was exceeded");
  logger.error({ err: error, method: path }, "internal error");
  return new ServerError(Status.INTERNAL, "internal error; see the server log");
}
