/** Ports for servers that stop and start again on the same one. */
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/** The first port the kernel gives out to listeners on port 0 (and to outgoing connections). */
function ephemeralLow(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A free port below the kernel's ephemeral range: no server on port 0 and no outgoing
 * connection is ever given it, so a server can stop and come back on it while the other
 * tests open ports by the hundred.
 */
export async function restartablePort(): Promise<number> {
  const low = Math.min(ephemeralLow(), 32768);
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * Math.max(1, low - 20000));
    if (await isFree(port)) return port;
  }
}
