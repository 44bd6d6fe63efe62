/**
 * The PostgreSQL schema, versioned like SQLite's: migrations applied in order at open,
 * each in a transaction, the version reached in plinth_schema. Append; never edit one.
 * Times are milliseconds since the epoch (bigint), as in the SQLite store.
 */
import type pg from "pg";
import { PlinthError } from "../errors.ts";

const migrations: string[] = [
  // 1: models with their revisions, the action history and its payloads, live children, meta.
  `CREATE TABLE plinth_meta (
     key text PRIMARY KEY,
     value text NOT NULL
   );
   CREATE TABLE models (
     id text PRIMARY KEY,
     model_type text NOT NULL,
     revision bigint NOT NULL,
     oldest_revision bigint NOT NULL,
     create_time bigint NOT NULL,
     update_time bigint NOT NULL,
     instance_size bigint NOT NULL,
     action_id text NOT NULL
   );
   CREATE INDEX models_by_type ON models (model_type, id);
   CREATE TABLE model_revisions (
     model_id text NOT NULL REFERENCES models (id) ON DELETE CASCADE,
     revision bigint NOT NULL,
     instance bytea NOT NULL,
     instance_size bigint NOT NULL,
     action_id text NOT NULL,
     create_time bigint NOT NULL,
     PRIMARY KEY (model_id, revision)
   );
   CREATE TABLE actions (
     id text PRIMARY KEY,
     model_id text NOT NULL,
     status integer NOT NULL,
     create_time bigint NOT NULL,
     end_time bigint,
     created_by text NOT NULL DEFAULT '',
     json text NOT NULL
   );
   CREATE INDEX actions_by_model ON actions (model_id, id);
   CREATE INDEX actions_by_status ON actions (status, id);
   CREATE INDEX actions_by_create_time ON actions (create_time);
   CREATE INDEX actions_by_creator ON actions (created_by, id);
   CREATE INDEX actions_ended ON actions (end_time) WHERE end_time IS NOT NULL;
   CREATE TABLE action_payloads (
     action_id text PRIMARY KEY REFERENCES actions (id) ON DELETE CASCADE,
     args bytea,
     prediction bytea
   );
   CREATE TABLE children (
     host text NOT NULL,
     pid integer NOT NULL,
     start_ticks text NOT NULL,
     PRIMARY KEY (host, pid)
   );`,
  // 2: the lease of the server that serves the database, renewed while it runs.
  `CREATE TABLE plinth_lease (
     name text PRIMARY KEY,
     server text NOT NULL,
     host text NOT NULL,
     pid integer NOT NULL,
     since timestamptz NOT NULL,
     expires timestamptz NOT NULL
   );`,
  // 3: each action's whole request while it has not ended: what a takeover runs again.
  `CREATE TABLE action_requests (
     action_id text PRIMARY KEY,
     request bytea NOT NULL
   );`,
];

/** The schema version this build writes. */
export const PG_SCHEMA_VERSION = migrations.length;

/** Brings the schema up to date; refuses one written by a newer Plinth. `where` names the database in errors. */
export async function migratePostgres(client: pg.ClientBase, where: string): Promise<void> {
  await client.query("CREATE TABLE IF NOT EXISTS plinth_schema (version integer NOT NULL)");
  // One server migrates at a time: the others wait here, then find nothing to do.
  await client.query("BEGIN");
  try {
    await client.query("LOCK TABLE plinth_schema IN EXCLUSIVE MODE");
    const { rows } = await client.query<{ version: number }>("SELECT version FROM plinth_schema");
    const version = rows[0]?.version ?? 0;
    if (version > PG_SCHEMA_VERSION) {
      throw new PlinthError(
        "invalid_argument",
        `config backend.url: ${where} was written by a newer Plinth (schema version ${version}; this one knows up to ${PG_SCHEMA_VERSION}); upgrade Plinth or point backend.url at another database`,
      );
    }
    for (let v = version; v < PG_SCHEMA_VERSION; v++) await client.query(migrations[v]!);
    if (rows.length === 0) await client.query("INSERT INTO plinth_schema (version) VALUES ($1)", [PG_SCHEMA_VERSION]);
    else await client.query("UPDATE plinth_schema SET version = $1", [Math.max(version, PG_SCHEMA_VERSION)]);
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  }
}
