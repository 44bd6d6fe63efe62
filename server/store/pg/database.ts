/**
 * This server's access to a PostgreSQL database, under both the PostgreSQL store and the
 * cluster: a pool of connections with a bound, calls that turn a lost database into
 * UNAVAILABLE (the pool reconnects by itself for the next call), and fenced write
 * transactions.
 *
 * Fenced: every write takes one transaction lock first (so revisions follow the commit
 * order) and checks this server's lease (its row in plinth_servers, which the cluster
 * keeps): a server that lost it writes nothing more.
 */
import { EventEmitter } from "node:events";
import pg from "pg";
import { PlinthError } from "../../errors.ts";
import { randomHex } from "../../run-id.ts";
import { migratePostgres } from "../postgres-migrations.ts";
import { commitUnknown, explain, isConnectionError, openError, redactUrl } from "./errors.ts";

/** The transaction lock every write takes first: one writer at a time, so revisions follow commits. */
export const WRITE_LOCK = 7301;

/** True only while this server's lease row ($1) is there and current. */
const HOLDS_LEASE = "SELECT EXISTS (SELECT 1 FROM plinth_servers WHERE server = $1 AND expires > now()) AS held";

export interface PgOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Connections at most. */
  poolSize: number;
  /** How long to wait for a connection before a call fails. */
  connectTimeoutMs: number;
  /** How long a server's lease lasts unless renewed: no transaction stays idle longer. */
  leaseMs: number;
  /** Told what went wrong in the background (an idle connection that broke). */
  onWarning?: ((message: string, error: unknown) => void) | undefined;
}

export interface PgEvents {
  /** A write was refused: this server's lease has lapsed, or another server removed it. */
  fenced: [];
}

export class PgDatabase {
  /** The database's own id; the plugin children of its servers carry it in their mark. */
  readonly id: string;
  /** This server's name on the database: its lease row, its claims, its children. */
  readonly server = randomHex(8);
  readonly url: string;
  /** The database as errors may name it (no password). */
  readonly where: string;
  readonly leaseMs: number;
  readonly events = new EventEmitter<PgEvents>();
  readonly #pool: pg.Pool;
  /** What must happen before the pool ends (the cluster leaves). */
  readonly #beforeClose: (() => Promise<void>)[] = [];
  #closed = false;

  private constructor(options: PgOptions, pool: pg.Pool, id: string) {
    this.url = options.url;
    this.where = redactUrl(options.url);
    this.leaseMs = options.leaseMs;
    this.#pool = pool;
    this.id = id;
  }

  /** Connects and brings the schema up to date. Errors name the config key: backend.url. */
  static async open(options: PgOptions): Promise<PgDatabase> {
    const where = redactUrl(options.url);
    const settings = { connectionString: options.url, connectionTimeoutMillis: options.connectTimeoutMs };
    const setup = new pg.Client(settings);
    setup.on("error", () => {}); // Until open() is done, errors come back as rejections.
    try {
      await setup.connect();
    } catch (error) {
      await setup.end().catch(() => {});
      throw new PlinthError(
        "invalid_argument",
        `config backend.url: cannot connect to ${where} (${(error as Error).message || (error as { code?: string }).code}); check that PostgreSQL runs there and that the URL, user and password are right`,
      );
    }
    try {
      await migratePostgres(setup, where);
      await setup.query("INSERT INTO plinth_meta (key, value) VALUES ('id', $1) ON CONFLICT (key) DO NOTHING", [randomHex(6)]);
      const id = (await setup.query<{ value: string }>("SELECT value FROM plinth_meta WHERE key = 'id'")).rows[0]!.value;
      const pool = new pg.Pool({ ...settings, max: options.poolSize, idleTimeoutMillis: 30_000 });
      // An idle connection that breaks is dropped by the pool; the next call opens another.
      pool.on("error", (error) => options.onWarning?.(`an idle connection to ${where} broke`, error));
      return new PgDatabase(options, pool, id);
    } catch (error) {
      throw openError(error, where);
    } finally {
      await setup.end().catch(() => {});
    }
  }

  /** Runs a query on the pool, turning a lost database into UNAVAILABLE. */
  async query<R extends pg.QueryResultRow>(sql: string | pg.QueryConfig, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.#closed) throw this.#closedError();
    try {
      return await this.#pool.query<R>(sql as string, params);
    } catch (error) {
      throw explain(error, this.where);
    }
  }

  /**
   * Runs `fn` in a write transaction on one connection of the pool: it holds WRITE_LOCK
   * and this server's lease from its start. A commit whose answer is lost with the
   * connection rejects with a CommitUnknownError.
   */
  async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw this.#closedError();
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw explain(error, this.where);
    }
    let broken = false;
    let committing = false;
    // The pool listens for a broken connection only while it is idle: a checked-out one that
    // breaks says so here (its query fails with it), not as an uncaught error.
    const onError = () => (broken = true);
    client.on("error", onError);
    try {
      await client.query("BEGIN");
      // A server that stalls in a transaction holds the write lock: PostgreSQL ends the
      // transaction within the lease, so the others never wait longer than that.
      await client.query(`SET LOCAL idle_in_transaction_session_timeout = ${Math.ceil(this.leaseMs)}`);
      // The lock first, then the lease: a statement sees what was committed when it began.
      await client.query(`SELECT pg_advisory_xact_lock(${WRITE_LOCK})`);
      const { rows } = await client.query<{ held: boolean }>(HOLDS_LEASE, [this.server]);
      if (!rows[0]?.held) throw this.fenced();
      const result = await fn(client);
      committing = true;
      await client.query("COMMIT");
      return result;
    } catch (error) {
      broken ||= isConnectionError(error);
      if (!broken) await client.query("ROLLBACK").catch(() => {});
      // Sent before the connection broke, a COMMIT may have been made: only the database knows.
      throw committing && broken ? commitUnknown(error, this.where) : explain(error, this.where);
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  /** The error of a write refused because this server's lease has lapsed, or is gone; says so to whoever keeps the lease. */
  fenced(): PlinthError {
    // Lapsed but still there, a renewal keeps it; removed by another server, it is lost.
    this.events.emit("fenced");
    return new PlinthError("unavailable", `this server's lease on ${this.where} has lapsed; retry in a moment, or on another server`);
  }

  /** Runs `fn` when the database closes, before its connections end. */
  beforeClose(fn: () => Promise<void>): void {
    this.#beforeClose.push(fn);
  }

  #closedError(): PlinthError {
    return new PlinthError("unavailable", `the store ${this.where} is closed`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    for (const fn of this.#beforeClose.splice(0)) await fn().catch(() => {});
    this.#closed = true;
    await this.#pool.end().catch(() => {});
  }
}
