// The plugin thread's entry on Node. Node 20 does not apply the --import hooks of the
// process (tsx) to a worker's own modules, so they are registered here, in the thread,
// before its TypeScript loads: tsx's for CommonJS (a package.json that says
// "type": "commonjs") and ES modules, then the plugin's files' format (node-format.mjs).
import { register } from "node:module";
import { register as registerCommonJs } from "tsx/cjs/api";
import { register as registerEsm } from "tsx/esm/api";

registerCommonJs();
registerEsm();
register(new URL("./node-format.mjs", import.meta.url));
await import("./node-thread.ts");
