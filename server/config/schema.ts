/**
 * The configuration file's schema. Every key is optional: the embedded default
 * (example plugins, in-memory state, 127.0.0.1:50051) needs no file at all.
 */
import { z } from "zod";

const positiveInt = z.number().int().positive();
const seconds = z.number().positive();
const list = z.array(z.string().min(1));

export const pluginSchema = z.strictObject({
  /** Path of the plugin module, relative to the config file. */
  module: z.string().min(1),
  runtime: z.enum(["node", "deno"]).default("node"),
  /** Deno only: what the plugin may touch beyond reading its own code. */
  permissions: z
    .strictObject({ read: list.optional(), write: list.optional(), net: list.optional(), env: list.optional(), run: list.optional() })
    .optional(),
});

export const configSchema = z.strictObject({
  server: z
    .strictObject({
      /** host:port; port 0 picks a free port. */
      address: z
        .string()
        .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:50051")
        .default("127.0.0.1:50051"),
    })
    .prefault({}),
  engine: z
    .strictObject({
      /** Live plugin children at most, data-access sub-calls included. */
      max_children: positiveInt.default(4),
      /** Seconds between SIGTERM and SIGKILL when a running call is cancelled. */
      sigterm_timeout: seconds.default(5),
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
      /** Seconds between two progress updates of one action, at most (the plugin's latest report wins). */
      progress_interval: seconds.default(0.05),
      /** State changes kept for WatchState clients that resume from a revision. */
      state_history: z.number().int().nonnegative().default(10000),
      /** Largest frame on a child's pipe, in bytes. */
      max_frame_bytes: positiveInt.default(64 * 1024 * 1024),
      /** Lines of a plugin's output kept on its action. */
      log_tail_lines: positiveInt.default(50),
      /** Finished actions kept in the live state: at most this many... */
      retain_actions: z.number().int().nonnegative().default(1000),
      /** ...and for at most this many seconds. */
      retain_actions_seconds: seconds.default(3600),
    })
    .prefault({}),
  backend: z
    .strictObject({
      /** sqlite keeps models and history in a file; memory keeps nothing past the process. */
      kind: z.enum(["sqlite", "memory"]).default("sqlite"),
      /** The SQLite file; relative to the config file, or to the working directory without one. */
      path: z.string().min(1).optional(),
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
    })
    .prefault({}),
  plugins: z.array(pluginSchema).optional(),
});

export type Config = z.output<typeof configSchema>;
export type PluginConfig = z.output<typeof pluginSchema>;
