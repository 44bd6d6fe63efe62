/** PostgreSQL's failures as Plinth's errors: what the store and the cluster answer, and what to do about it. */
import { PlinthError } from "../../errors.ts";
import { CommitUnknownError } from "../store.ts";

/** The URL without its password: what errors and logs may show. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(not a URL)";
  }
}

/** Errors that mean the database cannot be reached (now): the call may succeed later. */
export function isConnectionError(error: unknown): boolean {
  const code = String((error as { code?: string }).code ?? "");
  const message = String((error as Error).message ?? "");
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "EPIPE", "57P01", "57P02", "57P03"].includes(code) ||
    code.startsWith("08") ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(message)
  );
}

const messageOf = (error: unknown) => (error as Error).message || String((error as { code?: string }).code);

/** A failure of a call on the database `where`: a lost database is UNAVAILABLE, a full one QUEUE_FULL; the rest as they are. */
export function explain(error: unknown, where: string): unknown {
  if (PlinthError.is(error)) return error;
  const message = messageOf(error);
  if (isConnectionError(error)) {
    return new PlinthError("unavailable", `the database ${where} is unreachable (${message}); the server reconnects by itself: retry`, {
      cause: error,
    });
  }
  if ((error as { code?: string }).code === "53100") {
    return new PlinthError("queue_full", `the database ${where} is full: ${message}`, { cause: error });
  }
  return error;
}

/** A COMMIT sent before the connection broke: it may have been made, only the database knows. */
export function commitUnknown(error: unknown, where: string): CommitUnknownError {
  return new CommitUnknownError(
    "unavailable",
    `the database ${where} became unreachable (${messageOf(error)}) as it was committing the change: whether it was stored is known once it answers again; the server reconnects by itself`,
    { cause: error },
  );
}

/** A failure while opening the database: the config's backend.url is what to look at. */
export function openError(error: unknown, where: string): PlinthError {
  if (PlinthError.is(error)) return error;
  return new PlinthError("invalid_argument", `config backend.url: ${where}: ${(error as Error).message}`, { cause: error });
}
