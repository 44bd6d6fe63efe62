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
  // 4: several servers serve one database. Each has a row it renews (its lease); every
  // change of a model or an action gets a revision from one sequence, taken under one
  // lock until commit, so revisions follow the commit order; the kept requests are the
  // queue servers claim work from, in order per model.
  `DROP TABLE plinth_lease;
   CREATE TABLE plinth_servers (
     server text PRIMARY KEY,
     host text NOT NULL,
     pid integer NOT NULL,
     since timestamptz NOT NULL,
     expires timestamptz NOT NULL,
     address text NOT NULL DEFAULT '',
     plugins text NOT NULL DEFAULT '{}'
   );
   CREATE SEQUENCE plinth_change;
   SELECT setval('plinth_change', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
   ALTER TABLE actions ADD COLUMN change bigint NOT NULL DEFAULT 0;
   CREATE INDEX actions_by_change ON actions (change);
   ALTER TABLE models ADD COLUMN change bigint NOT NULL DEFAULT 0;
   CREATE INDEX models_by_change ON models (change);
   CREATE TABLE model_tombstones (
     id text PRIMARY KEY,
     change bigint NOT NULL,
     deleted timestamptz NOT NULL DEFAULT now()
   );
   CREATE INDEX model_tombstones_by_change ON model_tombstones (change);
   ALTER TABLE action_requests
     ADD COLUMN seq bigserial,
     ADD COLUMN model_id text NOT NULL DEFAULT '',
     ADD COLUMN model_type text NOT NULL DEFAULT '',
     ADD COLUMN data_access text[] NOT NULL DEFAULT '{}',
     ADD COLUMN owner text;
   UPDATE action_requests r SET model_id = a.model_id, model_type = coalesce(a.json::json->>'modelType', '')
     FROM actions a WHERE a.id = r.action_id;
   CREATE INDEX action_requests_by_model ON action_requests (model_id, seq);
   CREATE INDEX action_requests_by_owner ON action_requests (owner);
   ALTER TABLE children ADD COLUMN server text NOT NULL DEFAULT '';
   -- The group commit of action changes: one call, one round trip. The lock first (and
   -- until commit): revisions in commit order, claims that see every earlier write.
   CREATE FUNCTION plinth_write_actions(me text, ids text[], model_ids text[], statuses integer[], created bigint[],
       ended bigint[], creators text[], jsons text[], done text[], new_ids text[], new_requests bytea[],
       new_models text[], new_types text[], new_access text[], new_claims boolean[], durable boolean,
       OUT claimed text[], OUT claimed_revisions bigint[], OUT first bigint, OUT written text[]) LANGUAGE plpgsql AS $$
   DECLARE n integer := cardinality(ids);
   BEGIN
     PERFORM pg_advisory_xact_lock(7301);
     IF NOT EXISTS (SELECT 1 FROM plinth_servers WHERE server = me AND expires > now()) THEN RETURN; END IF;
     -- A step no client waits on (a status on the way, progress) need not wait for the disk:
     -- the next durable commit writes it too.
     IF NOT durable THEN PERFORM set_config('synchronous_commit', 'off', true); END IF;
     DELETE FROM action_requests WHERE action_id = ANY (done);
     -- Queued, or claimed at once by the server that took the call when it has a free
     -- child and nothing else is queued or running on the model.
     INSERT INTO action_requests (action_id, request, model_id, model_type, data_access, owner)
       SELECT u.i, u.r, u.m, u.t, ARRAY(SELECT json_array_elements_text(u.a::json)),
         CASE WHEN u.c AND (u.m = '' OR NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = u.m)) THEN me END
       FROM unnest(new_ids, new_requests, new_models, new_types, new_access, new_claims) AS u (i, r, m, t, a, c)
       ON CONFLICT (action_id) DO NOTHING;
     -- With the model's revision now: the claim keeps it so until the call ends.
     SELECT coalesce(array_agg(r.action_id ORDER BY r.seq), '{}'), coalesce(array_agg(coalesce(m.revision, 0) ORDER BY r.seq), '{}')
       INTO claimed, claimed_revisions
       FROM action_requests r LEFT JOIN models m ON m.id = r.model_id
       WHERE r.action_id = ANY (new_ids) AND r.owner = me;
     -- The batch's revisions, in its order: first, first + 1, …
     first := nextval('plinth_change');
     IF n > 1 THEN PERFORM setval('plinth_change', first + n - 1); END IF;
     -- An ended action never changes again: a server that lost its lease cannot undo what another ended.
     WITH w AS (
       INSERT INTO actions (id, model_id, status, create_time, end_time, created_by, json, change)
         SELECT u.i, u.m, u.s, u.c, u.e, u.b, u.j, first + u.o - 1
         FROM unnest(ids, model_ids, statuses, created, ended, creators, jsons) WITH ORDINALITY AS u (i, m, s, c, e, b, j, o)
         ON CONFLICT (id) DO UPDATE SET model_id = excluded.model_id, status = excluded.status,
           end_time = excluded.end_time, json = excluded.json, change = excluded.change
         WHERE actions.status NOT IN (5, 6, 7)
         RETURNING id)
     SELECT coalesce(array_agg(id), '{}') INTO written FROM w;
     -- Who wrote which revisions: that server applies its own changes without reading them back.
     PERFORM pg_notify('plinth', 'c ' || me || ' ' || first || ' ' || (first + n - 1));
     -- Work to claim: a call queued, or one that waited on a model that is now free.
     IF EXISTS (SELECT 1 FROM action_requests WHERE owner IS NULL) THEN PERFORM pg_notify('plinth', 'w'); END IF;
   END $$;
   -- A server with free children takes queued work it can run: the oldest first, and on a
   -- model only the oldest unfinished call, once no other call on that model is claimed.
   CREATE FUNCTION plinth_claim(me text, types text[], access text[], n integer)
       RETURNS TABLE (claimed_id text, claimed_seq bigint, claimed_request bytea, claimed_json text, claimed_revision bigint)
       LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_advisory_xact_lock(7301);
     IF NOT EXISTS (SELECT 1 FROM plinth_servers s WHERE s.server = me AND s.expires > now()) THEN RETURN; END IF;
     RETURN QUERY
       WITH pick AS (
         SELECT c.action_id FROM action_requests c
         WHERE c.owner IS NULL AND c.model_type = ANY (types) AND c.data_access <@ access
           AND (c.model_id = '' OR NOT EXISTS (
             SELECT 1 FROM action_requests e WHERE e.model_id = c.model_id AND (e.seq < c.seq OR e.owner IS NOT NULL)))
         ORDER BY c.seq LIMIT n),
       taken AS (
         UPDATE action_requests w SET owner = me FROM pick WHERE w.action_id = pick.action_id
         RETURNING w.action_id, w.seq, w.request)
       SELECT t.action_id, t.seq, t.request, a.json, coalesce(m.revision, 0) FROM taken t JOIN actions a ON a.id = t.action_id
         LEFT JOIN models m ON m.id = a.model_id ORDER BY t.seq;
   END $$;`,
  // 5: a concurrent model type's predicts on one model run at once, on several servers. A
  // queued call is shared when it may run beside the others on its model: a predict whose
  // type every live server declaring it runs shared. Each server says which types it runs
  // shared, and how many such calls on one model at once (shares); one that runs a shared
  // call's type one call at a time claims it alone, and then it is exclusive. A server
  // prefers the calls on the models its children hold, but not over a call older than
  // affinity_ms. An update (UpdateInstance) takes its place in its model's queue as a
  // call does, and the calls after it wait for it. The functions of 4 call these (a server
  // of schema 4 still running shares nothing, and keeps its rule: one call per model).
  `ALTER TABLE action_requests
     ADD COLUMN shared boolean NOT NULL DEFAULT false,
     ADD COLUMN enqueued timestamptz NOT NULL DEFAULT now();
   ALTER TABLE plinth_servers ADD COLUMN shares jsonb NOT NULL DEFAULT '{}';
   CREATE TABLE queued_updates (
     id text PRIMARY KEY,
     seq bigint NOT NULL DEFAULT nextval('action_requests_seq_seq'),
     model_id text NOT NULL,
     owner text NOT NULL REFERENCES plinth_servers (server) ON DELETE CASCADE
   );
   CREATE INDEX queued_updates_by_model ON queued_updates (model_id, seq);
   CREATE FUNCTION plinth_write_actions(me text, ids text[], model_ids text[], statuses integer[], created bigint[],
       ended bigint[], creators text[], jsons text[], done text[], new_ids text[], new_requests bytea[],
       new_models text[], new_types text[], new_access text[], new_claims boolean[], new_predicts boolean[], durable boolean,
       OUT claimed text[], OUT claimed_revisions bigint[], OUT first bigint, OUT written text[]) LANGUAGE plpgsql AS $$
   DECLARE
     n integer := cardinality(ids);
     mine jsonb;
   BEGIN
     PERFORM pg_advisory_xact_lock(7301);
     SELECT s.shares INTO mine FROM plinth_servers s WHERE s.server = me AND s.expires > now();
     IF NOT FOUND THEN RETURN; END IF;
     -- A step no client waits on (a status on the way, progress) need not wait for the disk:
     -- the next durable commit writes it too.
     IF NOT durable THEN PERFORM set_config('synchronous_commit', 'off', true); END IF;
     DELETE FROM action_requests WHERE action_id = ANY (done);
     -- Queued, or claimed at once by the server that took the call when it has a free child
     -- and the model lets it in: alone, when nothing else is queued or running on it; shared
     -- here, when nothing on it waits, no exclusive call runs and fewer than this server's
     -- share of it run here. The statement does not see its own rows: after another new call on its
     -- model, a call is claimed only shared, behind shared ones claimed too.
     WITH u AS (
       SELECT u.*, u.p
           AND EXISTS (SELECT 1 FROM plinth_servers s WHERE s.expires > now() AND s.shares ? u.t)
           AND NOT EXISTS (SELECT 1 FROM plinth_servers s WHERE s.expires > now() AND NOT (s.shares ? u.t)
             AND (s.plugins::jsonb -> 'modelTypes') ? u.t) AS shared
         FROM unnest(new_ids, new_requests, new_models, new_types, new_access, new_claims, new_predicts)
           WITH ORDINALITY AS u (i, r, m, t, a, c, p, o)),
     h AS (
       SELECT u.*, u.shared AND mine ? u.t AS here, row_number() OVER w AS nth, bool_and(u.c AND u.shared AND mine ? u.t) OVER w AS chain
         FROM u WINDOW w AS (PARTITION BY u.m ORDER BY u.o)),
     q AS (
       SELECT h.*, h.c AND (h.m = '' OR NOT EXISTS (SELECT 1 FROM queued_updates x WHERE x.model_id = h.m) AND CASE WHEN h.here
           THEN h.chain AND NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = h.m AND (NOT e.shared OR e.owner IS NULL))
             AND (SELECT count(*) FROM action_requests e WHERE e.model_id = h.m AND e.owner = me) + h.nth <= (mine ->> h.t)::integer
           ELSE h.nth = 1 AND NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = h.m) END) AS claim
         FROM h)
     INSERT INTO action_requests (action_id, request, model_id, model_type, data_access, owner, shared)
       SELECT q.i, q.r, q.m, q.t, ARRAY(SELECT json_array_elements_text(q.a::json)), CASE WHEN q.claim THEN me END,
         q.shared AND (q.here OR NOT q.claim)
       FROM q ORDER BY q.o
       ON CONFLICT (action_id) DO NOTHING;
     -- With the model's revision now: the claim keeps it so until the call ends.
     SELECT coalesce(array_agg(r.action_id ORDER BY r.seq), '{}'), coalesce(array_agg(coalesce(m.revision, 0) ORDER BY r.seq), '{}')
       INTO claimed, claimed_revisions
       FROM action_requests r LEFT JOIN models m ON m.id = r.model_id
       WHERE r.action_id = ANY (new_ids) AND r.owner = me;
     -- The batch's revisions, in its order: first, first + 1, …
     first := nextval('plinth_change');
     IF n > 1 THEN PERFORM setval('plinth_change', first + n - 1); END IF;
     -- An ended action never changes again: a server that lost its lease cannot undo what another ended.
     WITH w AS (
       INSERT INTO actions (id, model_id, status, create_time, end_time, created_by, json, change)
         SELECT u.i, u.m, u.s, u.c, u.e, u.b, u.j, first + u.o - 1
         FROM unnest(ids, model_ids, statuses, created, ended, creators, jsons) WITH ORDINALITY AS u (i, m, s, c, e, b, j, o)
         ON CONFLICT (id) DO UPDATE SET model_id = excluded.model_id, status = excluded.status,
           end_time = excluded.end_time, json = excluded.json, change = excluded.change
         WHERE actions.status NOT IN (5, 6, 7)
         RETURNING id)
     SELECT coalesce(array_agg(id), '{}') INTO written FROM w;
     -- Who wrote which revisions: that server applies its own changes without reading them back.
     PERFORM pg_notify('plinth', 'c ' || me || ' ' || first || ' ' || (first + n - 1));
     -- Work to claim: a call queued, or one that waited on a model that is now free.
     IF EXISTS (SELECT 1 FROM action_requests WHERE owner IS NULL) THEN PERFORM pg_notify('plinth', 'w'); END IF;
   END $$;
   CREATE OR REPLACE FUNCTION plinth_write_actions(me text, ids text[], model_ids text[], statuses integer[], created bigint[],
       ended bigint[], creators text[], jsons text[], done text[], new_ids text[], new_requests bytea[],
       new_models text[], new_types text[], new_access text[], new_claims boolean[], durable boolean,
       OUT claimed text[], OUT claimed_revisions bigint[], OUT first bigint, OUT written text[]) LANGUAGE sql AS $$
     SELECT * FROM plinth_write_actions(me, ids, model_ids, statuses, created, ended, creators, jsons, done, new_ids, new_requests,
       new_models, new_types, new_access, new_claims, array_fill(false, ARRAY[cardinality(new_ids)]), durable)
   $$;
   -- A server with free children takes queued work it can run, the oldest first — those on
   -- the models in held first, unless an older call waited longer than affinity_ms. On a
   -- model, after the updates queued before it: an exclusive call once it is the oldest and
   -- nothing else on it is claimed; a shared one (its type shared here too) once no
   -- exclusive call is before it, up to this server's share of the model.
   CREATE FUNCTION plinth_claim(me text, types text[], access text[], n integer, held text[], affinity_ms integer)
       RETURNS TABLE (claimed_id text, claimed_seq bigint, claimed_request bytea, claimed_json text, claimed_revision bigint)
       LANGUAGE plpgsql AS $$
   DECLARE mine jsonb;
   BEGIN
     PERFORM pg_advisory_xact_lock(7301);
     SELECT s.shares INTO mine FROM plinth_servers s WHERE s.server = me AND s.expires > now();
     IF NOT FOUND THEN RETURN; END IF;
     RETURN QUERY
       WITH open AS (
         SELECT c.action_id, c.seq, c.model_id, c.enqueued, c.shared AND mine ? c.model_type AS here,
           (mine ->> c.model_type)::integer AS most
         FROM action_requests c
         WHERE c.owner IS NULL AND c.model_type = ANY (types) AND c.data_access <@ access),
       ready AS (
         SELECT o.*, row_number() OVER (PARTITION BY o.model_id ORDER BY o.seq) AS nth FROM open o
         WHERE o.model_id = '' OR NOT EXISTS (SELECT 1 FROM queued_updates x WHERE x.model_id = o.model_id AND x.seq < o.seq) AND CASE WHEN o.here
           THEN NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = o.model_id AND e.seq < o.seq AND NOT e.shared)
           ELSE NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = o.model_id AND (e.seq < o.seq OR e.owner IS NOT NULL)) END),
       pick AS (
         SELECT r.action_id, r.here FROM ready r
         WHERE r.model_id = '' OR NOT r.here
           OR r.nth + (SELECT count(*) FROM action_requests e WHERE e.model_id = r.model_id AND e.owner = me) <= r.most
         ORDER BY (affinity_ms <= 0 OR r.model_id = ANY (held) OR r.enqueued <= now() - affinity_ms * interval '1 millisecond') DESC, r.seq
         LIMIT n),
       taken AS (
         UPDATE action_requests w SET owner = me, shared = pick.here FROM pick WHERE w.action_id = pick.action_id
         RETURNING w.action_id, w.seq, w.request)
       SELECT t.action_id, t.seq, t.request, a.json, coalesce(m.revision, 0) FROM taken t JOIN actions a ON a.id = t.action_id
         LEFT JOIN models m ON m.id = a.model_id ORDER BY t.seq;
   END $$;
   CREATE OR REPLACE FUNCTION plinth_claim(me text, types text[], access text[], n integer)
       RETURNS TABLE (claimed_id text, claimed_seq bigint, claimed_request bytea, claimed_json text, claimed_revision bigint)
       LANGUAGE sql AS $$
     SELECT * FROM plinth_claim(me, types, access, n, '{}', 0)
   $$;`,
  // Idempotent requests: each caller's request ids, freed with their action.
  `CREATE TABLE request_ids (
     created_by text NOT NULL,
     request_id text NOT NULL,
     fingerprint text NOT NULL,
     action_id text NOT NULL,
     create_time bigint NOT NULL,
     outcome text NOT NULL DEFAULT '',
     PRIMARY KEY (created_by, request_id)
   );
   CREATE INDEX request_ids_by_action ON request_ids (action_id);
   CREATE FUNCTION plinth_free_request_ids() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     DELETE FROM request_ids r USING gone g WHERE r.action_id = g.id;
     RETURN NULL;
   END $$;
   CREATE TRIGGER actions_free_request_ids AFTER DELETE ON actions
     REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION plinth_free_request_ids();`,
  // 7: priorities. A server claims the highest priority first (the action's, 3 when its JSON
  // has none, or a better one it inherits: below); within a priority, the calls on held models first as in 5; then callers take
  // turns: a caller's k-th unfinished call at that priority (oldest first, claimed ones
  // counted) goes in turn k, and within a turn the caller served least lately goes first
  // (claim_turns keeps when each was last served), so one caller's many calls do not starve
  // another's few; then the oldest. A model's own line is kept as in 5 whatever the
  // priorities on it: a call on a model is claimed at the best priority of the unfinished
  // calls on that model instead, so an urgent call is not held up behind its model's head;
  // turns stay counted at each call's own priority.
  `CREATE TABLE claim_turns (
     priority integer NOT NULL,
     created_by text NOT NULL,
     served bigint NOT NULL,
     PRIMARY KEY (priority, created_by)
   );
   CREATE SEQUENCE claim_turns_served;
   CREATE OR REPLACE FUNCTION plinth_claim(me text, types text[], access text[], n integer, held text[], affinity_ms integer)
       RETURNS TABLE (claimed_id text, claimed_seq bigint, claimed_request bytea, claimed_json text, claimed_revision bigint)
       LANGUAGE plpgsql AS $$
   DECLARE mine jsonb;
   BEGIN
     PERFORM pg_advisory_xact_lock(7301);
     SELECT s.shares INTO mine FROM plinth_servers s WHERE s.server = me AND s.expires > now();
     IF NOT FOUND THEN RETURN; END IF;
     RETURN QUERY
       WITH every AS (
         SELECT c.*, p.priority AS own, a.created_by, row_number() OVER (PARTITION BY p.priority, a.created_by ORDER BY c.seq) AS turn,
           CASE WHEN c.model_id = '' THEN p.priority ELSE min(p.priority) OVER (PARTITION BY c.model_id) END AS priority
         FROM action_requests c JOIN actions a ON a.id = c.action_id,
           LATERAL (SELECT coalesce((a.json::json ->> 'priority')::integer, 3) AS priority) p),
       open AS (
         SELECT c.action_id, c.seq, c.model_id, c.enqueued, c.priority, c.own, c.created_by, c.turn, t.served,
           c.shared AND mine ? c.model_type AS here, (mine ->> c.model_type)::integer AS most
         FROM every c LEFT JOIN claim_turns t ON t.priority = c.own AND t.created_by = c.created_by
         WHERE c.owner IS NULL AND c.model_type = ANY (types) AND c.data_access <@ access),
       ready AS (
         SELECT o.*, row_number() OVER (PARTITION BY o.model_id ORDER BY o.seq) AS nth FROM open o
         WHERE o.model_id = '' OR NOT EXISTS (SELECT 1 FROM queued_updates x WHERE x.model_id = o.model_id AND x.seq < o.seq) AND CASE WHEN o.here
           THEN NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = o.model_id AND e.seq < o.seq AND NOT e.shared)
           ELSE NOT EXISTS (SELECT 1 FROM action_requests e WHERE e.model_id = o.model_id AND (e.seq < o.seq OR e.owner IS NOT NULL)) END),
       pick AS (
         SELECT r.action_id, r.here, r.own, r.created_by FROM ready r
         WHERE r.model_id = '' OR NOT r.here
           OR r.nth + (SELECT count(*) FROM action_requests e WHERE e.model_id = r.model_id AND e.owner = me) <= r.most
         ORDER BY r.priority,
           (affinity_ms <= 0 OR r.model_id = ANY (held) OR r.enqueued <= now() - affinity_ms * interval '1 millisecond') DESC,
           r.turn, r.served NULLS FIRST, r.seq
         LIMIT n),
       turned AS (
         INSERT INTO claim_turns (priority, created_by, served)
           SELECT g.own, g.created_by, nextval('claim_turns_served') FROM (SELECT DISTINCT p.own, p.created_by FROM pick p) g
           ON CONFLICT (priority, created_by) DO UPDATE SET served = excluded.served),
       taken AS (
         UPDATE action_requests w SET owner = me, shared = pick.here FROM pick WHERE w.action_id = pick.action_id
         RETURNING w.action_id, w.seq, w.request)
       SELECT t.action_id, t.seq, t.request, a.json, coalesce(m.revision, 0) FROM taken t JOIN actions a ON a.id = t.action_id
         LEFT JOIN models m ON m.id = a.model_id ORDER BY t.seq;
   END $$;`,
  // 8: an unfinished action's last checkpoint (ctx.checkpoint(value)), for its next attempt on any server.
  `ALTER TABLE action_requests ADD COLUMN checkpoint bytea;`,
];

/** The advisory lock a migration holds; the write and claim functions hold 7301. */
const SCHEMA_LOCK = 7300;

/** The schema version this build writes. */
export const PG_SCHEMA_VERSION = migrations.length;

/** Brings the schema up to date; refuses one written by a newer Plinth. `where` names the database in errors. */
export async function migratePostgres(client: pg.ClientBase, where: string): Promise<void> {
  // One server migrates at a time: the others wait here, then find nothing to do. The lock
  // comes before the first CREATE: two servers creating the same table at once on a new
  // database collide in PostgreSQL's catalog (duplicate key in pg_type), IF NOT EXISTS or not.
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1)", [SCHEMA_LOCK]);
    await client.query("CREATE TABLE IF NOT EXISTS plinth_schema (version integer NOT NULL)");
    // What an older Plinth locks, so that one starting beside this one waits too.
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
