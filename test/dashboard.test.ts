/**
 * The dashboard in a real headless browser: Debian's chromium driven by playwright-core
 * (.ci/run installs it; without it the test is skipped, saying why), against the server
 * as its own process. Screenshots go to test-artifacts/dashboard-*.png.
 */

import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { Tensor } from "../sdk/mod.ts";
import { dataAccess, json, tensorArg } from "./helpers/args.ts";
import { restartablePort } from "./helpers/ports.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { fixture, root } from "./helpers/server.ts";
import { clients, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const CHROMIUM = "/usr/bin/chromium";
const missing = existsSync(CHROMIUM) ? "" : `no ${CHROMIUM}: apt-get install chromium`;
if (missing) console.log(`skipping the dashboard's browser test: ${missing}`);
const artifacts = join(root, "test-artifacts");

let browser: Browser | undefined;
let server: ServerProcess | undefined;
beforeAll(async () => {
  if (missing) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});
afterAll(async () => {
  await browser?.close();
  if (server && server.child.exitCode === null) {
    server.child.kill("SIGTERM");
    await once(server.child, "exit");
  }
});

/** The server on its own database and on a fixed HTTP port, so that a restart comes back where the page looks. */
function serve(config: string, httpPort: number): ServerProcess {
  return startBundledProcess(["--config", config, "--address", "127.0.0.1:0", "--http-address", `127.0.0.1:${httpPort}`]);
}

async function shot(page: Page, name: string) {
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, `dashboard-${name}.png`) });
}

describe("the dashboard's build", () => {
  it("is under 250 kB gzipped, script and styles, as a browser downloads it", () => {
    const assets = join(root, "dashboard/dist/assets");
    const files = readdirSync(assets).filter((f) => /\.(js|css)$/.test(f));
    expect(files.some((f) => f.endsWith(".js"))).toBe(true);
    const gzipped = files.reduce((sum, f) => sum + gzipSync(readFileSync(join(assets, f))).byteLength, 0);
    console.log(`the dashboard: ${(gzipped / 1024).toFixed(1)} kB gzipped in ${files.length} files`);
    expect(gzipped).toBeLessThan(250 * 1024);
  });
});

describe.skipIf(missing !== "")("the dashboard", () => {
  it("runs a fit from the form, shows its progress, cancels it, and reconnects after a restart", async () => {
    const dir = tempDir();
    const config = writeConfig(
      `backend:\n  path: ${join(dir, "plinth.db")}\nengine:\n  sigterm_timeout: 1\nplugins:\n  - module: ${join(root, "plugins/system-test/mod.ts")}\n  - module: ${fixture("durable.ts")}\n  - module: ${fixture("curve.ts")}\n  - module: ${join(root, "plugins/iris/mod.ts")}\n`,
      dir,
    );
    const httpPort = await restartablePort();
    server = serve(config, httpPort);
    const c = clients(await server.port);
    const modelId = (await c.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    // A fit that fails, for the history to find after the restart.
    const trainer = (await c.engine.createInstance({ modelType: "durable.Trainer", wait: true })).action!.modelId;
    const failed = (await c.engine.fit({ modelId: trainer, kwargs: { fail: json(1), code: json("flaky") }, wait: true })).action!;
    expect(failed.error?.code).toBe("flaky");
    // A fit that reports its loss each epoch, from a data-access argument that logs.
    const curve = (await c.engine.createInstance({ modelType: "curve.Model", wait: true })).action!.modelId;
    const curved = (
      await c.engine.fit({ modelId: curve, args: [dataAccess("curve.points")], kwargs: { epochs: json(12), epoch_ms: json(40) }, wait: true })
    ).action!;
    expect(curved.status).toBe(ActionStatus.SUCCEEDED);
    const iris = (await c.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!.modelId;
    // A model with three revisions: created, fitted twice.
    const revised = (await c.engine.createInstance({ modelType: "systest.Model", args: [json("r")], wait: true })).action!.modelId;
    const fits = [];
    for (const n of [1, 2]) fits.push((await c.engine.fit({ modelId: revised, args: [json(n)], wait: true })).action!);
    const latest = (await c.engine.getModel({ modelId: revised })).model!;
    expect(latest.revision).toBe(3n);
    // A predict with a tensor of 40 kB (a summary in the live state and lists) and 4 bytes.
    const pixels = Float32Array.from({ length: 100 * 100 }, (_, i) => i / 10);
    const tensorPredict = (
      await c.engine.predict({
        modelId,
        kwargs: { x: tensorArg(new Tensor("float32", [100, 100], pixels)), blob: { kind: { case: "bytes", value: new Uint8Array([1, 2, 3, 250]) } } },
        wait: true,
      })
    ).action!;
    expect(tensorPredict.status).toBe(ActionStatus.SUCCEEDED);
    c.channel.close();

    const page = await browser!.newPage({ viewport: { width: 1200, height: 720 } });
    // Waits end on what the page shows; the bound (playwright's default is 30 s) only catches "never".
    page.setDefaultTimeout(100_000);
    const base = `http://127.0.0.1:${httpPort}/`;

    // Iris fitted from the form, each argument from its data-access function.
    await page.goto(`${base}#/plugins`);
    await page.selectOption("select[name=call]", "fit");
    await page.fill("input[name=target]", iris);
    await page.press("input[name=target]", "Tab");
    await page.selectOption('[data-field="args[0]"] select', "iris.inputs");
    await page.selectOption('[data-field="args[1]"] select', "iris.outputs");
    await shot(page, "form-iris");
    await page.click("button[type=submit]");
    await page.locator("[data-testid=status], [data-testid=run-error]").first().waitFor();
    expect(await page.locator("[data-testid=run-error]").count()).toBe(0);
    await page.locator("[data-testid=status]", { hasText: "succeeded" }).waitFor();
    expect(await page.locator('[data-testid="data-args[0]"]').textContent()).toMatch(/^@iris\.inputs: succeeded/);
    expect(await page.locator('[data-testid="data-args[1]"]').textContent()).toMatch(/^@iris\.outputs: succeeded/);

    // The model's page: its three revisions, each with the action that made it; its actions; a download.
    await page.goto(`${base}#/models/${revised}`);
    await page.locator("[data-testid=revisions] tr[data-revision='1']").waitFor();
    expect(await page.locator("[data-testid=revisions] tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-revision")))).toEqual([
      "3",
      "2",
      "1",
    ]);
    expect(await page.locator("[data-testid=revisions] tr[data-revision='3'] a").textContent()).toBe(fits[1]!.id);
    expect(await page.locator("[data-testid=revisions] tr[data-revision='2'] a").textContent()).toBe(fits[0]!.id);
    expect(await page.locator("[data-testid=model-actions] tbody tr").count()).toBe(3);
    await shot(page, "model");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("[data-testid=download-3]")]);
    const saved = join(tempDir(), "instance.bin");
    await download.saveAs(saved);
    expect(statSync(saved).size).toBe(Number(latest.instanceSize));
    expect(JSON.parse(readFileSync(saved, "utf8")).fits).toHaveLength(2);

    // The fit's page: its loss drawn over the epochs, its data-access argument's log lines.
    await page.goto(`${base}#/actions/${curved.id}`);
    const loss = page.locator("[data-testid=chart-loss]");
    await loss.waitFor();
    expect(Number(await loss.getAttribute("data-points"))).toBe(curved.states.length);
    expect(curved.states.length).toBeGreaterThanOrEqual(6);
    expect(await loss.locator("figcaption").textContent()).toMatch(/^loss 0\.0833 over epoch; min 0\.0833, max/);
    await page.locator("[data-testid=chart-accuracy]").waitFor();
    expect(await page.locator('[data-testid="data-args[0]"]').textContent()).toContain("fetched 100 points");
    // Its timeline, in order: created, its data access, its call, its end.
    const steps = await page.locator("[data-testid=timeline] li").evaluateAll((items) => items.map((li) => li.getAttribute("data-what")));
    expect(steps).toEqual(["created, queued", "started", "args[0] ← @curve.points started", "args[0] ← @curve.points succeeded", "succeeded"]);
    await shot(page, "action-chart");

    // An action's tensor argument saved from its page, as .npy: numpy reads it as it was sent;
    // its bytes as they were.
    await page.goto(`${base}#/actions/${tensorPredict.id}`);
    const [npy] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="save-kwargs.x"]')]);
    expect(npy.suggestedFilename()).toBe(`${tensorPredict.id}-kwargs.x.npy`);
    const npyFile = join(tempDir(), "x.npy");
    await npy.saveAs(npyFile);
    const read = execFileSync("python3", [
      "-c",
      "import numpy, sys; a = numpy.load(sys.argv[1]); print(a.dtype, a.shape, a[99, 99], '%.1f' % a.astype('float64').sum())",
      npyFile,
    ]);
    expect(read.toString().trim()).toBe(`float32 (100, 100) 999.9 ${pixels.reduce((s, v) => s + v, 0).toFixed(1)}`);
    const [blob] = await Promise.all([page.waitForEvent("download"), page.click('[data-testid="save-kwargs.blob"]')]);
    const blobFile = join(tempDir(), "blob.bin");
    await blob.saveAs(blobFile);
    expect([...readFileSync(blobFile)]).toEqual([1, 2, 3, 250]);

    await page.goto(`${base}#/plugins`);
    await page.getByText("keeps its instantiate arguments and records every fit").waitFor();
    // What the model type's calls take, from their schemas.
    await page.click('[data-testid="schemas-systest.Model"] summary');
    await page.getByText("seconds to sleep first, reporting progress").first().waitFor();
    // The form's fields come from the call's schemas; the server's refusal shows beside its field.
    await page.selectOption("select[name=call]", "fit");
    await page.fill("input[name=target]", modelId);
    await page.press("input[name=target]", "Tab");
    const sleep = page.locator('[data-field="kwargs.sleep"] input[type=number]');
    await sleep.fill("-1");
    await page.click("button[type=submit]");
    await page.locator('[data-testid="error-kwargs.sleep"]', { hasText: "kwargs.sleep" }).waitFor();
    await shot(page, "form-error");
    await sleep.fill("30");
    await page.click("button[type=submit]");

    // The action's page: its progress bar advances.
    await page.locator("[data-testid=status]", { hasText: "executing" }).waitFor();
    const bar = page.locator("[data-testid=action] [data-testid=progress]");
    await bar.waitFor();
    const first = Number(await bar.getAttribute("data-value"));
    await page.waitForFunction(
      (before) => Number(document.querySelector("[data-testid=action] [data-testid=progress]")?.getAttribute("data-value")) > before,
      first,
    );
    await shot(page, "action");

    // The actions list shows it running, with its bar.
    await page.goto(`${base}#/`);
    const row = page.locator("[data-testid=actions] tr[data-status=executing]");
    await row.locator("[data-testid=progress]").waitFor();
    await shot(page, "actions");
    await row.locator("td:first-child a").click();

    // Cancel asks first; "keep it running" keeps it running.
    await page.click("[data-testid=cancel]");
    await page.locator("[data-testid=cancel-confirmation]", { hasText: "Cancel this fit of systest.Model? It has run" }).waitFor();
    await shot(page, "cancel-confirmation");
    await page.click("[data-testid=cancel-keep]");
    await page.locator("[data-testid=cancel-confirmation]").waitFor({ state: "detached" });
    expect(await page.locator("[data-testid=status]").textContent()).toBe("executing");
    await page.click("[data-testid=cancel]");
    await page.click("[data-testid=cancel-confirm]");
    await page.locator("[data-testid=status]", { hasText: "cancelled" }).waitFor();
    expect(await page.locator("[data-testid=cancel-outcome]").textContent()).toMatch(/^by CancelAction while executing/);
    await shot(page, "cancelled");

    // The server goes away: a banner; it comes back: the banner goes and the state is there again.
    server.child.kill("SIGTERM");
    await once(server.child, "exit");
    await page.locator("[data-testid=banner]").waitFor();
    await shot(page, "disconnected");
    server = serve(config, httpPort);
    await server.port;
    await page.locator("[data-testid=banner]").waitFor({ state: "detached" });
    await page.goto(`${base}#/models`);
    await page.locator("[data-testid=models] td", { hasText: modelId }).waitFor();

    // The history, after the restart: the old failed fit found by its model type and status.
    await page.goto(`${base}#/`);
    await page.fill("[data-testid=filters] input[name=type]", "durable.Trainer");
    await page.press("[data-testid=filters] input[name=type]", "Enter");
    await page.selectOption("[data-testid=filters] select[name=status]", "failed");
    const found = page.locator("[data-testid=actions] tbody tr");
    await page.waitForFunction((id) => {
      const rows = [...document.querySelectorAll("[data-testid=actions] tbody tr")];
      return rows.length === 1 && rows[0]!.textContent!.includes(id);
    }, failed.id);
    expect(await found.locator("td").allTextContents()).toEqual(
      expect.arrayContaining([failed.id, "fit", "durable.Trainer", trainer, "failed", "flaky"]),
    );
    // The view is in the URL: shared, it shows the same.
    expect(new URL(page.url()).hash).toBe("#/?status=failed&type=durable.Trainer");
    await shot(page, "history");
    const shared = await browser!.newPage({ viewport: { width: 390, height: 844 } });
    shared.setDefaultTimeout(100_000);
    await shared.goto(page.url());
    await shared.locator("[data-testid=actions] tbody tr", { hasText: failed.id }).waitFor();
    await shot(shared, "history-phone");
    await shared.close();

    // By keyboard alone: "?" lists the shortcuts, Esc closes them; j moves to the row and
    // Enter opens it; "g a" goes back to the actions; "/" finds an action by its id.
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await page.keyboard.press("?");
    await page.locator("[data-testid=shortcuts]", { hasText: "the next / previous row of the table" }).waitFor();
    await page.keyboard.press("Escape");
    await page.locator("[data-testid=shortcuts]").waitFor({ state: "detached" });
    await page.keyboard.press("j");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe(failed.id);
    await page.keyboard.press("Enter");
    await page.locator("[data-testid=error]", { hasText: "flaky" }).waitFor();
    expect(new URL(page.url()).hash).toBe(`#/actions/${failed.id}`);
    await page.keyboard.press("g");
    await page.keyboard.press("a");
    await page.locator("[data-testid=filters]").waitFor();
    await page.keyboard.press("/");
    expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("search");
    await page.keyboard.type(curved.id);
    await page.keyboard.press("Enter");
    await page.locator("[data-testid=chart-loss]").waitFor();
    expect(new URL(page.url()).hash).toBe(`#/actions/${curved.id}`);
    await page.close();
  });
  it("shows a two-server cluster's servers, what each runs, and the load over the last seconds", async () => {
    const url = await newDatabase();
    const config = (http: string) =>
      writeConfig(
        [
          "backend:",
          "  kind: postgres",
          `  url: ${url}`,
          "engine:",
          "  min_idle_workers: 0",
          "  sigterm_timeout: 1",
          "http:",
          `  address: ${http}`,
          "plugins:",
          `  - module: ${join(root, "plugins/system-test/mod.ts")}`,
        ].join("\n"),
      );
    const httpPort = await restartablePort();
    const a = startBundledProcess(["--config", config(`127.0.0.1:${httpPort}`), "--address", "127.0.0.1:0"]);
    const b = startBundledProcess(["--config", config("off"), "--address", "127.0.0.1:0"]);
    try {
      const [ca, cb] = [clients(await a.port), clients(await b.port)];
      const bName = (await cb.engine.listPlugins({})).servers.find((s) => s.thisServer)!.name;
      // A long predict running on b.
      const modelId = (await cb.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
      const slow = (await cb.engine.predict({ modelId, kwargs: { sleep: json(60) } })).action!;
      for await (const u of ca.actions.watchAction({ actionId: slow.id })) if (u.action!.status === ActionStatus.EXECUTING) break;
      expect((await ca.actions.getAction({ actionId: slow.id })).action!.server).toBe(bName);

      const page = await browser!.newPage({ viewport: { width: 1200, height: 720 } });
      page.setDefaultTimeout(100_000);
      await page.goto(`http://127.0.0.1:${httpPort}/#/servers`);
      await page.locator("[data-testid=servers] tbody tr").nth(1).waitFor();
      expect(await page.locator("[data-testid=servers] tbody tr").count()).toBe(2);
      const row = page.locator(`[data-testid=servers] tr[data-server="${bName}"]`);
      await row.locator("[data-testid=running]", { hasText: /^1 predict systest\.Model/ }).waitFor();
      // The load, from the live state each second: one running.
      await page.locator("[data-testid=chart-running]").waitFor();
      expect(await page.locator("[data-testid=chart-running] figcaption strong").textContent()).toBe("1");
      await shot(page, "servers");
      await page.close();
      await ca.actions.cancelAction({ actionId: slow.id });
      ca.channel.close();
      cb.channel.close();
    } finally {
      for (const p of [a, b]) {
        if (p.child.exitCode === null) {
          p.child.kill("SIGTERM");
          await once(p.child, "exit");
        }
      }
    }
  });

  it("windows a long table: the rows near the window in the page, each in its place; a focused row keeps the focus while the page scrolls away, and j goes on from it", async () => {
    const dir = tempDir();
    const config = writeConfig(
      `backend:\n  path: ${join(dir, "plinth.db")}\nplugins:\n  - module: ${join(root, "plugins/system-test/mod.ts")}\n`,
      dir,
    );
    const httpPort = await restartablePort();
    const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0", "--http-address", `127.0.0.1:${httpPort}`]);
    try {
      const c = clients(await p.port);
      const modelId = (await c.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
      // 200 predicts and the create: more than the table shows whole (150).
      for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 20 }, () => c.engine.predict({ modelId, wait: true })));
      c.channel.close();

      const page = await browser!.newPage({ viewport: { width: 1400, height: 700 } });
      page.setDefaultTimeout(100_000);
      await page.goto(`http://127.0.0.1:${httpPort}/#/`);
      const rows = "[data-testid=actions] tbody tr[data-status]";
      // The history comes a page of 50 at a time: "older" until the table holds all 201.
      for (let n = 50; n < 201; n += 50) {
        await page.locator(`[data-testid=actions][data-rows="${n}"]`).waitFor();
        await page.click("[data-testid=older]");
      }
      await page.locator('[data-testid=actions][data-rows="201"]').waitFor();
      await page.evaluate("window.scrollTo(0, 0)");
      await page.locator(`${rows}[aria-rowindex="2"]`).waitFor();
      const rendered = () => page.locator(rows).count();
      expect(await rendered()).toBeLessThan(100);
      // The focused element: a row's id link by its text, or else its tag (BODY when the focus is lost).
      const focusedId = () =>
        page.evaluate("document.activeElement?.closest('tbody tr') ? document.activeElement.textContent : document.activeElement?.tagName");
      const idAt = (rowIndex: number) => page.locator(`${rows}[aria-rowindex="${rowIndex}"] a`).first().textContent();

      // j three times: the third row has the focus.
      for (let i = 0; i < 3; i++) await page.keyboard.press("j");
      const third = await idAt(4);
      expect(await focusedId()).toBe(third);
      // The page scrolled to its end: the last rows are there, in their places, and the focus stayed.
      await page.evaluate("window.scrollTo(0, document.body.scrollHeight)");
      await page.locator(`${rows}[aria-rowindex="202"]`).waitFor();
      expect(await rendered()).toBeLessThan(100);
      expect(await focusedId()).toBe(third);
      // j brings the focused row back into view, then goes on to the next.
      await page.keyboard.press("j");
      await page.locator(`${rows}[aria-rowindex="5"]`).waitFor();
      expect(await focusedId()).toBe(third);
      await page.keyboard.press("j");
      const fourth = await idAt(5);
      expect(await focusedId()).toBe(fourth);
      // Pressed twice at once with the focused row out of view, j never lands far from it:
      // on it still (not yet in view), or on the row after it.
      await page.evaluate("window.scrollTo(0, document.body.scrollHeight)");
      await page.locator(`${rows}[aria-rowindex="202"]`).waitFor();
      await page.keyboard.press("j");
      await page.keyboard.press("j");
      await page.locator(`${rows}[aria-rowindex="6"]`).waitFor();
      expect([fourth, await idAt(6)]).toContain(await focusedId());
      await page.close();
    } finally {
      p.child.kill("SIGTERM");
      await once(p.child, "exit");
    }
  });
});
