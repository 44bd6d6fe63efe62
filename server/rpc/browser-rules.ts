/**
 * What the HTTP listener owes a browser's world, checked before anything else a request
 * asks:
 * - a Host allow-list against DNS rebinding (a page whose own name comes to resolve to
 *   127.0.0.1 would otherwise be same-origin with Plinth): IP addresses, localhost and
 *   *.localhost, the listener's own name, and `http.allowed_hosts` — as Vite and Jupyter do;
 * - CORS for the origins `http.cors.allowed_origins` names (none by default), with the
 *   methods and headers Connect and gRPC-Web use (connect-es's `cors`), and a request from any
 *   other origin refused before it runs;
 * - the headers of the dashboard's responses: a strict Content-Security-Policy, no framing,
 *   no sniffing, no referrer.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { isIP } from "node:net";
import { cors } from "@connectrpc/connect";

export interface BrowserOptions {
  /** The host the listener binds (its own name is allowed). */
  listenHost: string;
  /** http.allowed_hosts: names, ".example.com" for a domain and its subdomains, or "*" for any. */
  allowedHosts: string[];
  /** http.cors.allowed_origins: "https://app.example.com", or "*" for any. */
  corsOrigins: string[];
  /** http.cors.allow_credentials: cookies and HTTP authentication sent along (never with "*"). */
  corsCredentials: boolean;
}

/** The dashboard's own headers: its script and styles from itself, its API calls to itself, never framed. */
export const DASHBOARD_HEADERS = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
} as const;

/** Seconds a browser may keep a preflight's answer. */
const PREFLIGHT_MAX_AGE = 7200;

export function browserRules(o: BrowserOptions) {
  const hosts = new Set(o.allowedHosts.map((h) => h.toLowerCase()));
  const own = hostOf(o.listenHost).name;
  const anyOrigin = o.corsOrigins.includes("*");
  const origins = new Set(o.corsOrigins);

  /** Whether the Host header names this server by a name it answers to. */
  function hostAllowed(header: string): boolean {
    const name = hostOf(header).name;
    if (isIP(name) || name === own || name === "localhost" || name.endsWith(".localhost")) return true;
    if (hosts.has("*") || hosts.has(name)) return true;
    for (const h of hosts) if (h.startsWith(".") && (name === h.slice(1) || name.endsWith(h))) return true;
    return false;
  }

  /**
   * The request's origin when it is another site's (a page of its own origin sends its own,
   * or none): its name and port against the Host header's, the port the scheme's default
   * where one leaves it out (a proxy may send Host "x" for the page at https://x).
   */
  function crossOrigin(req: IncomingMessage): string | undefined {
    const origin = req.headers.origin;
    if (!origin) return undefined;
    try {
      const url = new URL(origin);
      const standard = url.protocol === "https:" ? "443" : "80";
      const host = hostOf(req.headers.host ?? "");
      const same = host.name === hostOf(url.host).name && (host.port || standard) === (url.port || standard);
      return same ? undefined : origin;
    } catch {
      return origin;
    }
  }

  const originAllowed = (origin: string) => origin !== "null" && (anyOrigin || origins.has(origin));

  function corsHeaders(res: ServerResponse, origin: string): void {
    // "*" with credentials is refused by browsers: the origin itself is named then.
    res.setHeader("access-control-allow-origin", anyOrigin && !o.corsCredentials ? "*" : origin);
    if (o.corsCredentials) res.setHeader("access-control-allow-credentials", "true");
    res.setHeader("access-control-expose-headers", cors.exposedHeaders.join(", "));
  }

  return {
    /**
     * Answers the request when the rules refuse it or it is a preflight, and sets its CORS
     * headers otherwise: true when it is answered.
     */
    check(req: IncomingMessage, res: ServerResponse, refuse: (status: number, code: string, message: string) => void): boolean {
      // No Host at all is no browser's request (HTTP/1.0 by hand): the listener says 400 to it.
      const host = req.headers.host;
      if (host !== undefined && !hostAllowed(host)) {
        refuse(
          403,
          "permission_denied",
          `Host ${JSON.stringify(host.slice(0, 100))} is not a name this server answers to (a guard against DNS rebinding): add it to http.allowed_hosts in the config`,
        );
        return true;
      }
      // An answer that depends on the Origin says so to caches, whatever this one's was.
      if (origins.size > 0 || o.corsCredentials) res.setHeader("vary", "Origin");
      const origin = crossOrigin(req);
      if (origin === undefined) return false;
      if (!originAllowed(origin)) {
        refuse(
          403,
          "permission_denied",
          `origin ${JSON.stringify(origin.slice(0, 100))} may not call this server from a browser: add it to http.cors.allowed_origins in the config`,
        );
        return true;
      }
      corsHeaders(res, origin);
      if (req.method === "OPTIONS") {
        res.writeHead(204, {
          "access-control-allow-methods": cors.allowedMethods.join(", "),
          "access-control-allow-headers": [...cors.allowedHeaders, "Authorization"].join(", "),
          "access-control-max-age": String(PREFLIGHT_MAX_AGE),
          // Chrome asks before a public site's page reaches a loopback or private address
          // (Private Network Access): an origin allowed here is allowed that too.
          ...(req.headers["access-control-request-private-network"] === "true" ? { "access-control-allow-private-network": "true" } : {}),
        });
        res.end();
        return true;
      }
      return false;
    },
  };
}

/** A Host header's name (lowercase, without brackets or a trailing dot) and port ("" when none). */
function hostOf(header: string): { name: string; port: string } {
  const port = /:(\d+)$/.exec(header)?.[1] ?? "";
  const name = (port ? header.slice(0, -port.length - 1) : header)
    .replace(/^\[|\]$/g, "")
    .replace(/\.$/, "")
    .toLowerCase();
  return { name, port };
}
