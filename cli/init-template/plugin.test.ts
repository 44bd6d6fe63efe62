// The plugin's tests, in-process: `npm test` (node:test) and `npm run test:deno` (Deno).
import assert from "node:assert/strict";
import { test } from "node:test";
import { testPlugin } from "plinth/sdk/testing";
import plugin from "./plugin.ts";

test("learns the line the points lie on, reporting its loss each epoch", async () => {
  const h = testPlugin(plugin);
  const points = await h.dataAccess("__NAME__.points", [], { n: 100, slope: 3, intercept: -1 });
  const fitted = await h.fit(await h.instantiate("__NAME__.Line"), [points], { epochs: 2000 });
  const reports = h.calls.at(-1)!.reports as { epoch: number; loss: number }[];
  assert.ok(reports.at(-1)!.loss < reports[0]!.loss, "the loss falls");
  const { prediction } = await h.predict(fitted, [[0, 1]]);
  const [y0, y1] = prediction as number[];
  assert.ok(Math.abs(y0! - -1) < 0.1 && Math.abs(y1! - 2) < 0.1, `predicted ${y0}, ${y1}; the line gives -1, 2`);
});

test("refuses what it cannot use, saying what to fix", async () => {
  const h = testPlugin(plugin);
  await assert.rejects(h.dataAccess("__NAME__.points", [], { n: 1 }), { code: "invalid_argument" });
  await assert.rejects(h.predict(await h.instantiate("__NAME__.Line"), [[1]]), /not fitted yet/);
});
