/**
 * The configuration file's schema. Every key is optional: the embedded default
 * (example plugins, ./data/plinth.db, 127.0.0.1:50051) needs no file at all.
 */
import { z } from "zod";
import { ROLES } from "../roles.ts";

const positiveInt = z.number().int().positive();
const mebibytes = z.number().positive();
const seconds = z.number().positive();
const list = z.array(z.string().min(1));
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/;
/** A retry policy (RetryPolicy in the API), intervals in seconds. */
const retryPolicy = z.strictObject({
  /** Attempts in all, the first included (1 to 100). */
  max_attempts: z.number().int().min(1).max(100),
  /** Seconds before the second attempt; default 1. */
  initial_interval: z.number().min(0.001).max(86400).optional(),
  /** Each later wait is the one before times this; default 2. */
  backoff_coefficient: z.number().min(1).max(100).optional(),
  /** Seconds no wait goes over; default 100 × initial_interval. */
  maximum_interval: z.number().min(0.001).max(86400).optional(),
  /** Error codes never retried, besides the engine's own list. */
  non_retryable_error_codes: z
    .array(z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, "must be an error code, e.g. bad_data"))
    .max(50)
    .optional(),
});

/** Whether `v` is an origin as browsers send it: scheme://host[:port], nothing more. */
function isOrigin(v: string): boolean {
  try {
    return new URL(v).origin === v;
  } catch {
    return false;
  }
}

/** A listener's host:port, or "off" for none (as --http-address off says): off is no address. */
const listenerAddress = (example: string) =>
  z
    .string()
    .refine((v) => v === "off" || HOST_PORT.test(v), `must be host:port, e.g. ${example}, or off`)
    .optional()
    .transform((v) => (v === "off" ? undefined : v));

export const pluginSchema = z
  .strictObject({
    /** Path of the plugin module, relative to the config file. */
    module: z.string().min(1),
    runtime: z.enum(["node", "deno"]).default("node"),
    /**
     * What the plugin may touch beyond reading its own code. Deno: read, write, net, env,
     * run. Node (its permission model): read and write, and addons (native addons, such
     * as onnxruntime-node: Node's --allow-addons); without this key a Node plugin has the
     * server user's rights.
     */
    permissions: z
      .strictObject({
        read: list.optional(),
        write: list.optional(),
        net: list.optional(),
        env: list.optional(),
        run: list.optional(),
        addons: z.boolean().optional(),
      })
      .optional(),
    /** The plugin's memory in MiB (heap and buffers, on top of its runtime's own); a call over it fails with out_of_memory. */
    max_memory_mb: z.number().min(64).optional(),
    /**
     * Deserialized instances a child keeps between calls, in MiB of their serialized size
     * (0: none); default: 256, or half of max_memory_mb when that is set. See residentMb().
     */
    resident_mb: z.number().nonnegative().optional(),
    /** Children that may serve predicts of one model at once, for model types whose predict is concurrent; default: engine.max_children. */
    max_replicas: z.number().int().positive().optional(),
    /**
     * Seconds a call may go without reporting progress or calling ctx.heartbeat() before
     * it is stopped (SIGTERM, then SIGKILL) and fails `stalled`: one for every call of the
     * plugin, or by call (instantiate, fit, predict, data_access; those not named: none).
     */
    heartbeat_timeout: z
      .union([
        seconds,
        z.strictObject({ instantiate: seconds.optional(), fit: seconds.optional(), predict: seconds.optional(), data_access: seconds.optional() }),
      ])
      .optional(),
    /**
     * How a failed call of the plugin's model types runs again (a request's own retry goes
     * over it, field by field): one policy for create, fit and predict, or by call
     * (instantiate, fit, predict; those not named: one attempt). Unset: one attempt.
     */
    retry: z
      .union([retryPolicy, z.strictObject({ instantiate: retryPolicy.optional(), fit: retryPolicy.optional(), predict: retryPolicy.optional() })])
      .optional(),
    /** Environment variables passed to the plugin's children besides PATH, HOME, LANG and TZ. */
    env: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name")).optional(),
    /** Reload when the module's folder changes: idle children retire, new calls get the new code. */
    watch: z.boolean().default(false),
  })
  .superRefine((plugin, ctx) => {
    const retry = plugin.retry && "max_attempts" in plugin.retry ? { all: plugin.retry } : (plugin.retry ?? {});
    for (const [call, policy] of Object.entries(retry)) {
      if (policy?.maximum_interval !== undefined && policy.maximum_interval < (policy.initial_interval ?? 1)) {
        const path = call === "all" ? ["retry", "maximum_interval"] : ["retry", call, "maximum_interval"];
        ctx.addIssue({ code: "custom", path, message: `must be at least initial_interval (${policy.initial_interval ?? 1} s)` });
      }
    }
    // What a child keeps resident lives in its memory: it must leave the plugin room to work.
    if (plugin.resident_mb !== undefined && plugin.max_memory_mb !== undefined && plugin.resident_mb >= plugin.max_memory_mb) {
      ctx.addIssue({
        code: "custom",
        path: ["resident_mb"],
        message: `must be less than max_memory_mb (${plugin.max_memory_mb}): the instances a child keeps count against its memory; e.g. half of it`,
      });
    }
    // A native addon is code outside Deno's sandbox: Plinth's Deno children get no --allow-ffi.
    if (plugin.runtime === "deno" && plugin.permissions?.addons !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["permissions", "addons"],
        message: "Node only: a Deno plugin cannot load native addons (Plinth grants Deno no --allow-ffi); remove it, or use runtime: node",
      });
    }
    // What Node 20's permission model cannot enforce is refused, not accepted and ignored.
    if (plugin.runtime !== "node" || !plugin.permissions) return;
    const why = {
      net: "Node 20's permission model cannot restrict the network",
      env: "Node 20's permission model cannot restrict environment variables (the child gets only PATH, HOME, LANG, TZ and `env`)",
      run: "a Node plugin may always start processes (tsx compiles TypeScript with one)",
    };
    for (const name of ["net", "env", "run"] as const) {
      if (plugin.permissions[name] !== undefined) {
        ctx.addIssue({ code: "custom", path: ["permissions", name], message: `${why[name]}; remove it, or use runtime: deno, which enforces it` });
      }
    }
  });

/** A plugin's resident budget in MiB: resident_mb, else 256, or half of max_memory_mb when that is set. */
export function residentMb(plugin: Pick<PluginConfig, "resident_mb" | "max_memory_mb">): number {
  return plugin.resident_mb ?? (plugin.max_memory_mb === undefined ? 256 : plugin.max_memory_mb / 2);
}

export const roleSchema = z.enum(ROLES);

/** A token: its sha256 in the config, or the token itself in a file or a variable (hashed at start). */
const tokenSchema = z
  .strictObject({
    /** Shown as Action.created_by and in the audit log. */
    name: z.string().min(1).max(200),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "must be the token's sha256 as 64 hex digits")
      .optional(),
    /** A file holding the token (relative to the config file). */
    file: z.string().min(1).optional(),
    /** An environment variable holding the token. */
    env: z.string().min(1).optional(),
    roles: z.array(roleSchema).min(1),
    /** After this instant (ISO 8601, e.g. 2027-01-01T00:00:00Z) the token is refused. */
    expires: z
      .string()
      .refine((s) => !Number.isNaN(Date.parse(s)), "must be a date and time, e.g. 2027-01-01T00:00:00Z")
      .optional(),
  })
  .refine((t) => [t.sha256, t.file, t.env].filter((x) => x !== undefined).length === 1, "give exactly one of sha256, file or env");

export const configSchema = z.strictObject({
  server: z
    .strictObject({
      /** host:port; port 0 picks a free port. */
      address: z.string().regex(HOST_PORT, "must be host:port, e.g. 127.0.0.1:50051").default("127.0.0.1:50051"),
      /** Serve an address other than loopback without authentication and without TLS. */
      insecure: z.boolean().default(false),
      /** TLS (files, relative to the config file); with client_ca, clients must present a certificate it signed. Reloaded on SIGHUP. */
      tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1), client_ca: z.string().min(1).optional() }).optional(),
      auth: z
        .strictObject({
          /** Bearer tokens (`authorization: Bearer <token>`). */
          tokens: z.array(tokenSchema).default([]),
          /** Client certificates (with tls.client_ca): roles by subject, e.g. "CN=alice" or "alice". */
          certificates: z.array(z.strictObject({ subject: z.string().min(1), roles: z.array(roleSchema).min(1) })).default([]),
          /** grpc.health.v1 without a token (load balancers probe it); false: it needs the read role. */
          open_health: z.boolean().default(true),
          /**
           * Whose actions a caller sees in full (arguments, results, logs): "own" (others' in
           * summary, unless its role is admin or read_all), or "all".
           */
          visibility: z.enum(["own", "all"]).default("own"),
        })
        .optional(),
      limits: z
        .strictObject({
          /** Open WatchState and WatchAction streams per caller, at most. */
          streams_per_caller: positiveInt.default(64),
          /** Actions waiting (queued or accessing data) per caller, at most. */
          queued_per_caller: positiveInt.default(1000),
          /**
           * Values one request may hold, counted before it is decoded (each number of a `json`
           * argument is one): decoding costs ~2 µs of the server's one thread per value.
           */
          max_request_values: positiveInt.default(20_000),
          /**
           * Seconds between the server's pings on each gRPC connection; one that does not answer
           * within 20 s (or this, if less) is closed: a client gone without a word, or a
           * connection that never sent the HTTP/2 preface.
           */
          keepalive_seconds: seconds.default(60),
        })
        .prefault({}),
    })
    .prefault({}),
  engine: z
    .strictObject({
      /** Live plugin children at most, data-access sub-calls included. */
      max_children: positiveInt.default(4),
      /**
       * Seconds a cancelled call has to stop once told over the pipe (its ctx.signal aborts);
       * one that does keeps its child warm for the next call. Then SIGTERM; 0: SIGTERM at once.
       */
      cancel_grace_seconds: z.number().nonnegative().default(1),
      /** Seconds between SIGTERM and SIGKILL when a running call is cancelled. */
      sigterm_timeout: seconds.default(5),
      /**
       * Seconds a stopping server (SIGTERM, SIGINT) lets the actions queued and running on it
       * finish, refusing new ones, before it cancels what is left; 0: cancel at once.
       */
      stop_grace_seconds: z.number().nonnegative().default(0),
      /** Seconds between two reconciliations of the child count with the operating system. */
      check_children_period: seconds.default(1),
      /** Keep a child that answered cleanly for the next call of its plugin module. */
      reuse_workers: z.boolean().default(true),
      /** A child is retired after this many calls. */
      max_calls_per_worker: positiveInt.default(10000),
      /** Seconds an idle child beyond min_idle_workers is kept. */
      idle_worker_timeout: seconds.default(60),
      /** Idle children kept ready per plugin module (started with the server), while slots are free. */
      min_idle_workers: z.number().int().nonnegative().default(1),
      /** Queued actions at most; beyond, new ones are refused with RESOURCE_EXHAUSTED. */
      max_queue: positiveInt.default(1000),
      /**
       * Seconds between two progress updates of one action, at most (the plugin's latest
       * report wins); 0: every report, in order, to each WatchAction stream.
       */
      progress_interval: z.number().nonnegative().default(0.05),
      /** State changes kept for WatchState clients that resume: a revision and a key each (~100 bytes). */
      state_history: z.number().int().nonnegative().default(10000),
      /** The deno binary for deno plugins; default: the one the npm package `deno` installs. */
      deno_binary: z.string().min(1).optional(),
      /** Largest frame on a child's pipe, in bytes. */
      max_frame_bytes: positiveInt.default(64 * 1024 * 1024),
      /** Lines of a plugin's output kept on its action. */
      log_tail_lines: positiveInt.default(50),
      /** Finished actions kept in the live state: at most this many... */
      retain_actions: z.number().int().nonnegative().default(1000),
      /** ...and for at most this many seconds... */
      retain_actions_seconds: seconds.default(3600),
      /** ...and while their arguments and results take at most this many MiB. */
      retain_actions_mb: mebibytes.default(8),
      /** Model instances this server keeps in memory, in MiB at most: a call on one of them reads nothing from the store. */
      model_cache_mb: mebibytes.default(256),
      /** Arguments and results of the actions not yet ended, in MiB at most; beyond, new actions are refused. */
      max_inflight_mb: mebibytes.default(512),
      /** Arguments and results larger than this show as summaries in the state, streams and lists. */
      inline_payload_bytes: z.number().int().nonnegative().default(1024),
      /** JSON larger than this comes back as json_text even where json (google.protobuf.Value) was asked for. */
      max_json_value_bytes: positiveInt.default(256 * 1024),
      /** GetState, ListActions and WatchState snapshots come in pages of at most this many MiB. */
      max_page_mb: mebibytes.default(4),
      /** A WatchState client more than this many MiB behind gets a fresh snapshot instead of the changes. */
      watcher_queue_mb: mebibytes.default(8),
      /** Arguments per call at most (args), and keyword arguments (kwargs), at each level. */
      max_args: positiveInt.default(1024),
      max_kwargs: positiveInt.default(1024),
      /** DataAccess arguments per request at most, nested ones included... */
      max_data_access: positiveInt.default(256),
      /** ...and how deep they may nest. */
      max_data_access_depth: positiveInt.default(8),
    })
    .prefault({}),
  backend: z
    .strictObject({
      /** sqlite keeps models and history in a file; postgres in a PostgreSQL database; memory keeps nothing past the process. */
      kind: z.enum(["sqlite", "postgres", "memory"]).default("sqlite"),
      /** The SQLite file; relative to the config file, or to the working directory without one. */
      path: z.string().min(1).optional(),
      /** postgres: the database, as postgres://user:password@host:port/database (PG* variables fill what it leaves out). */
      url: z.string().min(1).optional(),
      /** postgres: connections at most. */
      pool_size: positiveInt.default(10),
      /** postgres: seconds to wait for a connection before a call fails with UNAVAILABLE. */
      connect_timeout: z.number().positive().default(5),
      /**
       * postgres: each server renews its lease on the database this often (a third of it,
       * at most every second); one that stops renewing is removed by the others after
       * this many seconds: its running actions end interrupted, its queued ones run elsewhere.
       */
      lease_seconds: z.number().min(1).default(10),
      /**
       * postgres: a server claims the queued calls on models its children hold before older
       * ones on other models, for at most this many milliseconds of their wait; 0: in queue order.
       */
      claim_affinity_ms: z.number().int().nonnegative().default(100),
      /** normal survives the server being killed; full also survives a power loss (an fsync per change). */
      synchronous: z.enum(["normal", "full"]).default("normal"),
      /** Revisions kept per model, the latest included. */
      keep_revisions: positiveInt.default(5),
      /** Finished actions kept in the history: at most this many... */
      max_actions: positiveInt.default(100000),
      /** ...and none older than this many days. */
      max_action_age_days: z.number().positive().default(30),
      /** Refuse writes once the SQLite file would grow past this many MiB. */
      max_size_mb: z.number().positive().optional(),
      /** The history keeps an argument or result in full up to this size; larger ones as summaries. */
      max_payload_bytes: z
        .number()
        .int()
        .nonnegative()
        .default(16 * 1024),
    })
    .prefault({})
    .refine((b) => b.kind !== "postgres" || b.url !== undefined, {
      message: "backend.kind postgres needs backend.url, e.g. postgres://plinth:secret@db.internal:5432/plinth",
      path: ["url"],
    }),
  plugins: z.array(pluginSchema).optional(),
  http: z
    .strictObject({
      /** host:port of the Connect and gRPC-Web listener (curl, browsers); off when unset or "off" (the embedded default: 127.0.0.1:8080). */
      address: listenerAddress("127.0.0.1:8080"),
      /**
       * Host names the listener answers to besides IP addresses, localhost and its own
       * (a reverse proxy's public name): "plinth.example.com", ".example.com" for a domain
       * and its subdomains, "*" for any. Others are refused: DNS rebinding.
       */
      allowed_hosts: z
        .array(
          z
            .string()
            .regex(
              /^(\*|\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$/,
              "must be a host name, .domain or *",
            ),
        )
        .max(100)
        .default([]),
      cors: z
        .strictObject({
          /** Origins whose pages may call the API: "https://app.example.com", or "*". None by default. */
          allowed_origins: z
            .array(
              z
                .string()
                .refine((v) => v === "*" || isOrigin(v), "must be an origin, scheme://host[:port] with no path (https://app.example.com), or *"),
            )
            .max(100)
            .default([]),
          /** Whether those pages' cookies and HTTP authentication go along (the browser's credentials: 'include'). */
          allow_credentials: z.boolean().default(false),
        })
        // Any site at all, with the user's cookies: what CORS exists to prevent.
        .refine((c) => !(c.allow_credentials && c.allowed_origins.includes("*")), {
          message: 'allow_credentials cannot go with allowed_origins "*": name the origins',
          path: ["allow_credentials"],
        })
        .prefault({}),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** host:port of the Prometheus endpoint (GET /metrics); off when unset or "off". */
      address: listenerAddress("127.0.0.1:9464"),
    })
    .prefault({}),
});

export type Config = z.output<typeof configSchema>;
export type PluginConfig = z.output<typeof pluginSchema>;
