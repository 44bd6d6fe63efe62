// The plugin thread's entry on Node. Node 20 does not apply the --import hooks of the
// process (tsx) to a worker's own modules, so they are registered here, in the thread,
// before its TypeScript loads.
import { register } from "tsx/esm/api";

register();
await import("./node-thread.ts");
