/**
 * The one error class of the server's domain code. The gRPC layer maps `kind` to a
 * status (rpc/error-mapper.ts); the message is what the client sees, so it says what
 * to fix.
 */

export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "queue_full"
  | "shutting_down"
  | "unavailable"
  | "cancelled"
  | "deadline_exceeded"
  | "unauthenticated"
  | "permission_denied"
  | "internal";

const mark = Symbol.for("plinth.PlinthError");

export class PlinthError extends Error {
  readonly kind: ErrorKind;
  readonly [mark] = true;

  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PlinthError";
    this.kind = kind;
  }

  /** True for any PlinthError, even from another copy of this module. */
  static is(error: unknown): error is PlinthError {
    return typeof error === "object" && error !== null && (error as Record<symbol, unknown>)[mark] === true;
  }
}

export const invalid = (message: string) => new PlinthError("invalid_argument", message);
export const notFound = (message: string) => new PlinthError("not_found", message);

/** At most this many characters of any client input in a message. */
const QUOTE_CHARS = 200;

/** A client's input cut to what a message may show of it (`chars`, 200 unless given). */
export function cut(input: string, chars = QUOTE_CHARS): string {
  return input.length > chars ? `${input.slice(0, chars)}…` : input;
}

/** A client's input as an error message quotes it: JSON-quoted, cut at 200 characters. */
export function quote(input: string): string {
  return JSON.stringify(cut(input));
}
