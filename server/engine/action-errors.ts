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
  /** A DataAccess argument's function failed; the message names the argument. */
  | "data_access_failed"
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
