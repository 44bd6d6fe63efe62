/**
 * The codes an action's error carries (`Action.error.code`): one list, documented
 * here and in the README.
 */
export type ActionErrorCode =
  /** The plugin function threw; its message and stack are on the error. */
  | "plugin_error"
  /** The plugin's child exited (or was killed) before answering. */
  | "plugin_exited"
  /** The plugin module failed to load, or its child failed to start. */
  | "plugin_load_failed"
  /** The child broke the pipe protocol (a frame too large or malformed, output out of turn). */
  | "protocol_error"
  /** The plugin's child went over plugins[].max_memory_mb. */
  | "out_of_memory"
  /** The call neither reported progress nor called ctx.heartbeat() for plugins[].heartbeat_timeout; it was stopped. */
  | "stalled"
  /** A DataAccess argument's function failed; the message names the argument. */
  | "data_access_failed"
  /**
   * An argument did not match its function's schema: a data-access result checked by
   * the server, or any argument checked by the plugin's own validator (the SDK's, or a
   * PluginError the plugin threw with this code).
   */
  | "invalid_argument"
  /** The action's timeout passed. */
  | "deadline_exceeded"
  /** CancelAction stopped it. */
  | "cancelled"
  /** The server stopped while it ran. */
  | "shutting_down"
  /** The server died while it ran; the next start marked it. */
  | "interrupted"
  /** Its model was deleted before it ran. */
  | "not_found"
  /** The store could not record a change of it or its model. */
  | "store_failed"
  /** A fault of the server's own; the details are in the server log. */
  | "internal";

/** The codes above, to tell a plugin's own code from one of the engine's. */
const ENGINE_CODES = new Set<string>(
  Object.keys({
    plugin_error: 0,
    plugin_exited: 0,
    plugin_load_failed: 0,
    protocol_error: 0,
    out_of_memory: 0,
    stalled: 0,
    data_access_failed: 0,
    invalid_argument: 0,
    deadline_exceeded: 0,
    cancelled: 0,
    shutting_down: 0,
    interrupted: 0,
    not_found: 0,
    store_failed: 0,
    internal: 0,
  } satisfies Record<ActionErrorCode, 0>),
);

/**
 * The code a PluginError may give an action: lowercase letters, digits, "_", "." and
 * "-", at most 64 characters, and none of the engine's own but invalid_argument; undefined when it is not one.
 */
export function pluginErrorCode(code: string): string | undefined {
  if (code === "invalid_argument") return code; // the one engine code a plugin may give: its arguments are wrong
  return /^[a-z][a-z0-9_.-]{0,63}$/.test(code) && !ENGINE_CODES.has(code) ? code : undefined;
}
