/**
 * The HTTP listener in a browser's world: the Host allow-list (DNS rebinding), CORS for
 * the origins configured, the dashboard's security headers, and where the dashboard keeps
 * a token. A real server; raw HTTP for the headers, Debian's chromium for what a browser
 * does with them.
 */
import { once } from "node:events";
import { existsSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const missing = existsSync(CHROMIUM) ? "" : `no ${CHROMIUM}: apt-get install chromium`;

/** A page server of its own origin (another port is another origin), serving one empty page. */
async function pageServer(): Promise<{ server: Server; origin: string }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>another site</title>");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

let t: TestServer;
let allowed: Awaited<ReturnType<typeof pageServer>>;
let other: Awaited<ReturnType<typeof pageServer>>;
let browser: Browser | undefined;
beforeAll(async () => {
  allowed = await pageServer();
  other = await pageServer();
  t = await startTestServer({
    http: { address: "127.0.0.1:0", allowed_hosts: ["plinth.internal", ".corp.example"], cors: { allowed_origins: [allowed.origin] } },
    plugins: [],
  });
  if (!missing) browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
  allowed?.server.close();
  other?.server.close();
});

/** One raw HTTP request to the listener, with these headers: its status, headers and body. */
function send(method: string, path: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: t.server.httpPort, method, path, headers }, (res) => {
      let text = "";
      res.on("data", (chunk: Buffer) => {
        text += chunk.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const listPlugins = (headers: Record<string, string>) =>
  send("POST", "/plinth.v1.EngineService/ListPlugins", { "content-type": "application/json", ...headers }, "{}");

describe("the HTTP listener, for browsers", () => {
  it("refuses a request addressed to another name (DNS rebinding) with 403 naming http.allowed_hosts; answers its IPs, localhost and the names configured", async () => {
    const port = t.server.httpPort;
    for (const host of ["attacker.example", `attacker.example:${port}`, `evil.localhost.attacker.example:${port}`, "corp.example.attacker.example"]) {
      const refused = await listPlugins({ host });
      expect(refused.status, host).toBe(403);
      expect(JSON.parse(refused.body).message).toContain("add it to http.allowed_hosts");
    }
    // The dashboard's files are behind the same check.
    expect((await send("GET", "/", { host: "attacker.example" })).status).toBe(403);
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `app.localhost:${port}`,
      `[::1]:${port}`,
      `plinth.internal:${port}`,
      "a.corp.example",
    ]) {
      expect((await listPlugins({ host })).status, host).toBe(200);
    }
  });

  it("answers a preflight from an origin in http.cors.allowed_origins with Connect's methods and headers, and refuses another origin's request before it runs", async () => {
    const preflight = await send("OPTIONS", "/plinth.v1.EngineService/ListPlugins", {
      origin: allowed.origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type, authorization",
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers["access-control-allow-origin"]).toBe(allowed.origin);
    expect(preflight.headers["access-control-allow-methods"]).toContain("POST");
    expect(String(preflight.headers["access-control-allow-headers"]).toLowerCase()).toContain("authorization");
    expect(String(preflight.headers["access-control-allow-headers"])).toContain("Connect-Protocol-Version");
    expect(preflight.headers["access-control-allow-credentials"]).toBeUndefined();
    expect(preflight.headers.vary).toBe("Origin");
    // Chrome's Private Network Access: a public site's page asks before reaching a loopback address.
    const privateNetwork = await send("OPTIONS", "/plinth.v1.EngineService/ListPlugins", {
      origin: allowed.origin,
      "access-control-request-method": "POST",
      "access-control-request-private-network": "true",
    });
    expect(privateNetwork.headers["access-control-allow-private-network"]).toBe("true");
    // With origins named, even a same-origin answer varies on Origin (a cache keeps them apart).
    expect((await listPlugins({ origin: `http://127.0.0.1:${t.server.httpPort}` })).headers.vary).toBe("Origin");

    const refused = await listPlugins({ origin: other.origin });
    expect(refused.status).toBe(403);
    expect(refused.headers["access-control-allow-origin"]).toBeUndefined();
    expect(JSON.parse(refused.body).message).toContain("add it to http.cors.allowed_origins");
    // The dashboard's own page, same origin: no CORS needed, nothing refused. Behind a proxy
    // too, where the Host leaves out the scheme's port or says it, in any case.
    const own = `http://127.0.0.1:${t.server.httpPort}`;
    expect((await listPlugins({ origin: own })).status).toBe(200);
    expect((await listPlugins({ origin: "https://plinth.internal", host: "Plinth.Internal:443" })).status).toBe(200);
    expect((await listPlugins({ origin: "https://plinth.internal:443", host: "plinth.internal" })).status).toBe(200);
    // Another port of the same name is another origin.
    expect((await listPlugins({ origin: "https://plinth.internal:8443", host: "plinth.internal" })).status).toBe(403);
  });

  it.skipIf(missing !== "")("in Chromium, a page of an allowed origin calls the API; one of another origin cannot", async () => {
    const call = `fetch("http://127.0.0.1:${t.server.httpPort}/plinth.v1.EngineService/ListPlugins", {
      method: "POST", headers: { "content-type": "application/json", authorization: "Bearer x" }, body: "{}" })
      .then((r) => r.json().then((body) => ({ status: r.status, body })), (e) => ({ error: String(e) }))`;
    const page = await browser!.newPage();
    await page.goto(allowed.origin);
    // (No plugin: proto3 JSON leaves out the empty list.)
    expect(await page.evaluate(call)).toEqual({ status: 200, body: {} });
    await page.goto(other.origin);
    expect(await page.evaluate(call)).toEqual({ error: "TypeError: Failed to fetch" });
    await page.close();
  });

  it.skipIf(missing !== "")(
    "serves the dashboard with a strict CSP it runs under, no framing, nosniff and no referrer; keeps a token for the session unless remembered",
    async () => {
      const { headers } = await send("GET", "/", { host: `127.0.0.1:${t.server.httpPort}` });
      expect(headers["content-security-policy"]).toContain("script-src 'self'");
      expect(headers["content-security-policy"]).toContain("connect-src 'self'");
      expect(headers["content-security-policy"]).toContain("frame-ancestors 'none'");
      expect(headers["x-frame-options"]).toBe("DENY");
      expect(headers["x-content-type-options"]).toBe("nosniff");
      expect(headers["referrer-policy"]).toBe("no-referrer");

      const page = await browser!.newPage();
      const violations: string[] = [];
      page.on("console", (m) => {
        if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
      });
      const dashboard = `http://127.0.0.1:${t.server.httpPort}/`;
      await page.goto(`${dashboard}#/plugins`);
      await page.locator("select[name=call]").waitFor();
      expect(violations).toEqual([]);

      // The token: the tab's session's, until "remember" is ticked.
      const stored = () => page.evaluate(`[sessionStorage.getItem("plinth.token"), localStorage.getItem("plinth.token")]`);
      await page.fill("input[name=token]", "secret-token");
      await page.press("input[name=token]", "Enter");
      await page.locator("input[name=token]").blur();
      expect(await stored()).toEqual(["secret-token", null]);
      await page.check("input[name=remember]");
      expect(await stored()).toEqual([null, "secret-token"]);
      await page.uncheck("input[name=remember]");
      expect(await stored()).toEqual(["secret-token", null]);

      // Framed by another site's page, the dashboard does not load in the frame.
      await page.goto(other.origin);
      await page.setContent(`<iframe src="${dashboard}"></iframe>`);
      const frame = page.frames()[1]!;
      await frame.waitForLoadState();
      expect(await frame.locator("header").count()).toBe(0);
      await page.close();
    },
  );
});
