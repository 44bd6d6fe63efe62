/**
 * The dashboard's files (dashboard/dist, built by `npm run build:dashboard`, which
 * `npm install` runs), served on the HTTP listener beside the API. Only GET and HEAD of
 * files inside that folder; anything else is left to the caller (a 404).
 */
import { readFile, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import { PLINTH_DIR } from "../package-root.ts";
import { DASHBOARD_HEADERS } from "./browser-rules.ts";

export const DASHBOARD_DIR = join(PLINTH_DIR, "dashboard/dist");

const types: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

export function dashboardFiles(dir = DASHBOARD_DIR) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    } catch {
      return false; // not a path of ours (broken percent-encoding): the 404
    }
    if (path.includes("\0")) return false;
    const file = normalize(join(dir, path === "/" ? "index.html" : path));
    if (!file.startsWith(dir + sep)) return false;
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) {
      if (path !== "/") return false;
      res.writeHead(503, { "content-type": "text/plain; charset=utf-8", ...DASHBOARD_HEADERS });
      res.end("The dashboard is not built: run npm run build:dashboard (npm install does it), then reload.\n");
      return true;
    }
    res.writeHead(200, {
      ...DASHBOARD_HEADERS,
      "content-type": types[extname(file)] ?? "application/octet-stream",
      "content-length": info.size,
      // Hashed asset names change with their content; the page itself is always asked again.
      "cache-control": path.startsWith("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
    });
    res.end(req.method === "HEAD" ? undefined : await readFile(file));
    return true;
  };
}
