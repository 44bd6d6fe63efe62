// The plugin thread of the built child (dist/sdk/adapters/, beside the built
// node-thread.mjs) for a plugin the server did not build: tsx's hooks registered in the
// thread before the plugin loads, as node-thread.mjs does for the sources, then the built
// thread. node.ts starts it when PLINTH_PLUGIN_LOADER is "tsx".
import { register } from "node:module";
import { register as registerCommonJs } from "tsx/cjs/api";
import { register as registerEsm } from "tsx/esm/api";

registerCommonJs();
registerEsm();
register(new URL("./node-format.mjs", import.meta.url));
await import("./node-thread.mjs");
