/**
 * `npm start` / `node --import tsx server/main.ts [--config plinth.yaml] [--address host:port]`.
 * Runs until SIGTERM or SIGINT, then stops in order: no child left behind (serve.ts).
 */
import { setFlagsFromString } from "node:v8";

// The heap grows by 40 % between full collections rather than V8's default (up to 4x
// under a high allocation rate): with real-sized payloads going through at hundreds per
// second, RSS under load stays near idle (~200 MiB, not ~300), at no measurable cost in
// throughput (npm run bench:payloads, bench:process; 20 % cost trivial calls some).
// Set before the server allocates anything of size.
setFlagsFromString("--heap-growing-percent=40");

const { serve } = await import("./serve.ts");
process.exitCode = await serve(process.argv.slice(2));
