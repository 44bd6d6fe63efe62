/**
 * One live server per database. A server holds an exclusive SQLite lock on
 * `<backend.path>.lock` for as long as it runs; the operating system releases it when
 * the process ends, however it ends, so a crashed server never leaves a stale lock. A
 * second server on the same file refuses to start, naming the file and the holder
 * (which the holder records in the database's meta table, readable by anyone).
 */
import { hostname } from "node:os";
import Database from "better-sqlite3";
import { PlinthError } from "../errors.ts";

/** Who holds a database: what the holder records once it has the lock. */
export interface Holder {
  pid: number;
  host: string;
  since: string;
}

/** How messages name a holder: "Plinth server pid 4121 on gpu-1, serving since …". */
export function describeHolder(holder: Holder): string {
  return `Plinth server pid ${holder.pid} on ${holder.host}, serving since ${holder.since}`;
}

export function thisHolder(): Holder {
  return { pid: process.pid, host: hostname(), since: new Date().toISOString() };
}

/** Takes the lock or throws a config error naming the holder. Close the result to release it. */
export function lockDatabase(path: string): Database.Database {
  const lock = new Database(`${path}.lock`, { timeout: 0 });
  try {
    lock.pragma("locking_mode = EXCLUSIVE");
    lock.exec("BEGIN EXCLUSIVE");
    return lock;
  } catch (error) {
    lock.close();
    const code = (error as { code?: string }).code ?? "";
    if (!code.startsWith("SQLITE_BUSY") && !code.startsWith("SQLITE_LOCKED")) throw error;
    const holder = readHolder(path);
    const who = holder ? describeHolder(holder) : "another Plinth server";
    throw new PlinthError(
      "invalid_argument",
      `config backend.path: ${path} is in use by ${who}; one database serves one server at a time: stop that one, or point backend.path at another file`,
    );
  }
}

/** The holder recorded in the database, if it can be read. */
function readHolder(path: string): Holder | undefined {
  try {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const row = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'holder'").get();
      return row && (JSON.parse(row.value) as Holder);
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  }
}
