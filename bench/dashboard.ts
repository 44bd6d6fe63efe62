/**
 * `npm run bench:dashboard [-- --before REF] [--quick]`: the actions page in Debian's
 * chromium while 1,000 actions are live and changing (predicts queued on four children,
 * those running reporting their progress every 50 ms, each ended one replaced at once),
 * with this checkout's dashboard and with the dashboard of REF (by default the commit
 * before the page was made to keep up with it), turn about on the same server: the page's
 * files are swapped under it, the API is the same.
 *
 * A frame over 50 ms is what the browser reports as a long animation frame (the
 * PerformanceObserver entry behind the Performance panel's long frames); the worst gap
 * between two requestAnimationFrame callbacks is shown beside it. After the 10 s of
 * changes, a jump to the middle of the table: its worst frame apart (0: none over 50 ms).
 */
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { type Browser, chromium, type Page } from "playwright-core";
import { createPlinthClient } from "../client/client.ts";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { ChangeKind } from "../gen/plinth/v1/state_service_pb.ts";
import { checkout } from "./checkout.ts";
import { bytes, createModel, startPlinth, unary } from "./grpc-calls.ts";
import { printTable } from "./report.ts";
import { tempDir } from "./temp.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const before = argv.includes("--before") ? argv[argv.indexOf("--before") + 1]! : "dac0fd4";
const LIVE = 1000;
const SECONDS = quick ? 5 : 10;
const ROUNDS = quick ? 1 : 3;

/** The dashboard built from `dir`'s sources into a folder of its own. */
function build(dir: string): string {
  const out = join(tempDir("plinth-bench-dashboard-"), "dist");
  execFileSync("npx", ["vite", "build", "dashboard", "--outDir", out, "--emptyOutDir"], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
  return out;
}

console.error(`building the dashboards: this checkout's and ${before}'s…`);
// --no-before: this checkout's alone, while working on it.
const versions = [
  { name: "this checkout", dist: build(root) },
  ...(argv.includes("--no-before") ? [] : [{ name: `before (${before})`, dist: build(checkout(before)) }]),
];

const plinth = await startPlinth("bench/plugins/trivial.ts", { engine: { max_children: 4 }, config: ["http:", "  address: 127.0.0.1:0"] });
const httpPort = Number(/"http":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(plinth.output())![1]);
const models = await Promise.all(Array.from({ length: 8 }, () => createModel(plinth.client, "bench.Progress")));

// The load: 1,000 live actions at all times, counted from the live state.
const client = createPlinthClient(`127.0.0.1:${plinth.port}`);
const stopLoad = new AbortController();
const live = new Set<string>();
let changes = 0;
let submitted = 0;
const submit = async () => {
  const modelId = models[submitted++ % models.length]!;
  const request = bytes(PredictRequestSchema, {
    modelId,
    kwargs: {
      seconds: { kind: { case: "json", value: { kind: { case: "numberValue", value: 0.4 } } } },
      every: { kind: { case: "json", value: { kind: { case: "numberValue", value: 50 } } } },
    },
  });
  const { action } = await unary(plinth.client, "/plinth.v1.EngineService/Predict", request, (b) => fromBinary(PredictResponseSchema, b));
  if (action!.status < ActionStatus.SUCCEEDED) live.add(action!.id);
};
let topping = false;
const topUp = async () => {
  if (topping || stopLoad.signal.aborted) return;
  topping = true;
  try {
    while (live.size < LIVE && !stopLoad.signal.aborted) await Promise.all(Array.from({ length: Math.min(50, LIVE - live.size) }, submit));
  } finally {
    topping = false;
  }
};
const following = (async () => {
  try {
    for await (const m of client.state.watchState({ kinds: [ChangeKind.ACTION_UPSERTED] }, { signal: stopLoad.signal })) {
      if (m.event.case !== "actionUpserted") continue;
      changes++;
      const a = m.event.value;
      if (a.status >= ActionStatus.SUCCEEDED) live.delete(a.id);
      else live.add(a.id);
      void topUp();
    }
  } catch (error) {
    if (!stopLoad.signal.aborted) throw error;
  }
})();
console.error(`filling the queue to ${LIVE} live actions…`);
await topUp();

// A browser for each measurement: a page that never comes back is ended with its browser.
const launch = () =>
  chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

/** Long frames and the worst rAF gap of the actions page over SECONDS, with the page's files from `dist`. */
async function measure(
  browser: Browser,
  dist: string,
): Promise<{ long: number[]; worstGap: number; rows: number; changesPerSecond: number; scroll: number }> {
  const page: Page = await browser.newPage({ viewport: { width: 1366, height: 800 } });
  page.on("crash", () => console.error("  (the page crashed)"));
  await page.route(`http://127.0.0.1:${httpPort}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (route.request().method() !== "GET" || path.startsWith("/plinth.v1.")) return route.continue();
    const file = join(dist, path === "/" ? "index.html" : path);
    const body = await readFile(file).catch(() => undefined);
    return body ? route.fulfill({ body, contentType: types[extname(file)] ?? "application/octet-stream" }) : route.continue();
  });
  // In the page: each long animation frame's duration, and the gaps between frames.
  await page.addInitScript(`
    window.long = [];
    window.gaps = [];
    window.detail = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        window.long.push(e.duration);
        window.detail.push({
          duration: Math.round(e.duration),
          layout: Math.round(e.startTime + e.duration - e.styleAndLayoutStart),
          scripts: e.scripts.map((s) => (s.invoker + " " + s.sourceFunctionName + " " + Math.round(s.duration))).join("; "),
        });
      }
    })
      .observe({ type: "long-animation-frame", buffered: true });
    let last = performance.now();
    const frame = (now) => { window.gaps.push(now - last); last = now; requestAnimationFrame(frame); };
    requestAnimationFrame(frame);
  `);
  await page.goto(`http://127.0.0.1:${httpPort}/#/`);
  // The page has the live actions when its table holds most of them.
  // How many rows the table holds (a windowed table renders only those near the window).
  const ROWS = `Number(document.querySelector('[data-testid="actions"]')?.dataset.rows ?? document.querySelectorAll('[data-testid="actions"] tbody tr').length)`;
  await page.waitForFunction(`${ROWS} >= ${LIVE * 0.9}`, undefined, { timeout: 120_000 });
  // The first render of the table is a page load, not the page keeping up: measured after it.
  await page.waitForTimeout(2000);
  await page.evaluate("window.long.length = 0; window.gaps.length = 0; window.detail.length = 0");
  const from = changes;
  await page.waitForTimeout(SECONDS * 1000);
  const seen = (await page.evaluate(`({ long: window.long, gaps: window.gaps, rows: ${ROWS} })`)) as { long: number[]; gaps: number[]; rows: number };
  // Then a jump to the middle of the table, as someone looking for a row would: the frames
  // of the second after it (rows rendered that were not there).
  await page.evaluate("window.long.length = 0; window.scrollTo(0, document.body.scrollHeight / 2)");
  await page.waitForTimeout(1000);
  const scroll = (await page.evaluate("window.long")) as number[];
  const changesPerSecond = (changes - from) / SECONDS;
  if (process.env.PLINTH_BENCH_DETAIL) console.error(await page.evaluate("JSON.stringify(window.detail.slice(0, 8), null, 1)"));
  await page.close();
  return { long: seen.long, worstGap: Math.max(...seen.gaps), rows: seen.rows, changesPerSecond, scroll: Math.max(0, ...scroll) };
}

/** A page whose main thread never comes back answers nothing: the measurement gives up after `ms`. */
function within<T>(measuring: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the page did not answer for ${ms / 1000} s (its main thread busy)`)), ms);
  });
  return Promise.race([measuring, late]).finally(() => clearTimeout(timer));
}

const results = new Map<string, Awaited<ReturnType<typeof measure>>[]>();
const failures = new Map<string, string[]>();
for (let round = 0; round < ROUNDS; round++) {
  for (const v of round % 2 === 0 ? versions : [...versions].reverse()) {
    // A page that cannot keep up may not live to be measured: that is its result.
    const browser = await launch();
    const r = await within(measure(browser, v.dist), 90_000).catch((error: Error) => error.message.split("\n")[0]!);
    await browser.close();
    if (typeof r === "string") {
      failures.set(v.name, [...(failures.get(v.name) ?? []), r]);
      console.error(`  ${v.name}, round ${round + 1}: ${r}`);
      continue;
    }
    results.set(v.name, [...(results.get(v.name) ?? []), r]);
    console.error(
      `  ${v.name}, round ${round + 1}: ${r.long.length} frames over 50 ms (worst ${Math.round(Math.max(0, ...r.long))} ms), ${r.rows} rows, ${Math.round(r.changesPerSecond)} changes/s; a jump to the middle: ${Math.round(r.scroll)} ms`,
    );
  }
}

stopLoad.abort();
await following;
await plinth.stop();

console.log(`\nThe actions page, ${LIVE} live actions changing, ${SECONDS} s × ${ROUNDS} round(s) each (target: no frame over 50 ms)\n`);
printTable(
  ["dashboard", "frames over 50 ms", "worst frame", "worst rAF gap", "actions in the table", "changes/s", "worst frame of a jump to the middle"],
  versions.map(({ name }) => {
    const runs = results.get(name) ?? [];
    if (runs.length === 0) return [name, `none measured: ${failures.get(name)?.[0]}`, "", "", "", "", ""];
    const long = runs.flatMap((r) => r.long);
    return [
      name,
      String(long.length),
      long.length ? `${Math.round(Math.max(...long))} ms` : "—",
      `${Math.round(Math.max(...runs.map((r) => r.worstGap)))} ms`,
      String(Math.min(...runs.map((r) => r.rows))),
      String(Math.round(runs.reduce((s, r) => s + r.changesPerSecond, 0) / runs.length)),
      // A frame under 50 ms is no long animation frame: 0 means none was.
      `${Math.round(Math.max(...runs.map((r) => r.scroll)))} ms`,
    ];
  }),
);
