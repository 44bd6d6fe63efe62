/**
 * The trivial plugin as one the server cannot build (its import is computed): it loads
 * through tsx, as before the server built plugins — bench:process's cold predict of the
 * tsx start beside the built one.
 */
const { default: plugin } = await import(["./trivial", "ts"].join("."));
export default plugin;
