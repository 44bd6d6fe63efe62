/**
 * Versioned schema migrations, applied in order at open; PRAGMA user_version holds
 * the version reached. Append new migrations; never edit an old one.
 */
import type Database from "better-sqlite3";
import { PlinthError } from "../errors.ts";

const migrations: string[] = [
  // 1: models with their revisions, the action history, live children.
  `CREATE TABLE models (
     id TEXT PRIMARY KEY,
     model_type TEXT NOT NULL,
     revision INTEGER NOT NULL,
     oldest_revision INTEGER NOT NULL,
     create_time INTEGER NOT NULL,
     update_time INTEGER NOT NULL,
     instance_size INTEGER NOT NULL,
     action_id TEXT NOT NULL
   );
   CREATE INDEX models_by_type ON models (model_type, id);
   CREATE TABLE model_revisions (
     model_id TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
     revision INTEGER NOT NULL,
     instance BLOB NOT NULL,
     instance_size INTEGER NOT NULL,
     action_id TEXT NOT NULL,
     create_time INTEGER NOT NULL,
     PRIMARY KEY (model_id, revision)
   );
   CREATE TABLE actions (
     id TEXT PRIMARY KEY,
     model_id TEXT NOT NULL,
     status INTEGER NOT NULL,
     create_time INTEGER NOT NULL,
     end_time INTEGER,
     json TEXT NOT NULL
   );
   CREATE INDEX actions_by_model ON actions (model_id, id);
   CREATE INDEX actions_by_status ON actions (status, id);
   CREATE INDEX actions_by_create_time ON actions (create_time);
   CREATE TABLE children (
     pid INTEGER PRIMARY KEY,
     start_ticks TEXT NOT NULL
   );`,
  // 2: arguments and results that actions show as summaries, up to max_payload_bytes each.
  `CREATE TABLE action_payloads (
     action_id TEXT PRIMARY KEY REFERENCES actions (id) ON DELETE CASCADE,
     args BLOB,
     prediction BLOB
   );`,
  // 3: the database's id (it marks the plugin children of its servers) and who holds it.
  `CREATE TABLE meta (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   );`,
  // 4: who started each action, to list a caller's actions.
  `ALTER TABLE actions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
   CREATE INDEX actions_by_creator ON actions (created_by, id);`,
  // 5: idempotent requests: each caller's request ids, freed with their action.
  `CREATE TABLE request_ids (
     created_by TEXT NOT NULL,
     request_id TEXT NOT NULL,
     fingerprint TEXT NOT NULL,
     action_id TEXT NOT NULL,
     create_time INTEGER NOT NULL,
     outcome TEXT NOT NULL DEFAULT '',
     PRIMARY KEY (created_by, request_id)
   );
   CREATE INDEX request_ids_by_action ON request_ids (action_id);
   CREATE TRIGGER actions_free_request_ids AFTER DELETE ON actions
   BEGIN DELETE FROM request_ids WHERE action_id = old.id; END;`,
  // 6: what an unfinished action's next attempt starts from after a restart: its whole
  // request (an action with a retry policy) and its last checkpoint; gone once it ends.
  `CREATE TABLE action_requests (
     action_id TEXT PRIMARY KEY REFERENCES actions (id) ON DELETE CASCADE,
     request BLOB,
     checkpoint BLOB
   );`,
];

/** The schema version this build writes. */
export const SCHEMA_VERSION = migrations.length;

export function migrate(db: Database.Database, path: string): void {
  const version = Number(db.pragma("user_version", { simple: true }));
  if (version > SCHEMA_VERSION) {
    throw new PlinthError(
      "invalid_argument",
      `config backend.path: ${path} was written by a newer Plinth (schema version ${version}; this one knows up to ${SCHEMA_VERSION}); upgrade Plinth or point backend.path elsewhere`,
    );
  }
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
