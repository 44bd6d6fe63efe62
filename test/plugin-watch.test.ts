/**
 * The dev loop: a watched plugin's file is edited while the server runs. The next call
 * runs the new code, a call running on the old code finishes there, and code that does
 * not load is reported while the previous version keeps serving. On Node and on Deno.
 */
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json, jsonOf } from "./helpers/args.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";
import { watchActions } from "./helpers/watch.ts";

const sdk = join(root, "sdk/mod.ts");

/** The plugin's source at a version: predict answers the version after kwargs.sleep seconds. */
function source(version: string, extraType = ""): string {
  return `import { z } from "zod";
import { defineModel, definePlugin } from ${JSON.stringify(sdk)};

export default definePlugin({
  name: "dev",
  models: {
    "dev.Model": defineModel({
      instantiate: () => ({}),
      predict: {
        kwargs: z.object({ sleep: z.number().min(0).default(0) }),
        run: async (ctx, _model, _args, { sleep }) => {
          ctx.report({ sleeping: sleep });
          await ctx.sleep(sleep * 1000);
          return ${JSON.stringify(version)};
        },
      },
    }),${extraType}
  },
});
`;
}

for (const runtime of ["node", "deno"] as const) {
  describe(`a watched plugin on ${runtime}`, () => {
    let t: TestServer;
    let file: string;
    let modelId: string;
    beforeAll(async () => {
      // Inside the repository, so that its zod import resolves as a plugin's in a clone would.
      const dir = tempDir("watch-", join(root, "test-artifacts"));
      file = join(dir, "mod.ts");
      writeFileSync(file, source("v1"));
      t = await startTestServer({ plugins: [{ module: file, runtime, watch: true }] });
      modelId = (await t.engine.createInstance({ modelType: "dev.Model", wait: true })).action!.modelId;
    });
    afterAll(() => t?.close());

    const predict = async (sleep = 0) => {
      const action = (await t.engine.predict({ modelId, kwargs: { sleep: json(sleep) }, wait: true })).action!;
      expect(action.error?.message ?? "").toBe("");
      return jsonOf(action.result!.prediction);
    };
    /** Writes the file and waits for the server's verdict on it. */
    const edit = async (text: string, outcome: "reloaded" | "failed") => {
      const verdict = once(t.server.reloads, outcome);
      writeFileSync(file, text);
      return (await verdict) as [string, unknown];
    };

    it("the next call runs the new code; a call running on the old code finishes there", async () => {
      expect(await predict()).toBe("v1");
      // A long call on v1, running before the edit.
      const long = (await t.engine.predict({ modelId, kwargs: { sleep: json(1.5) } })).action!;
      await watchActions(t, (actions) => actions.get(long.id)?.state !== undefined);
      const [key, generation] = await edit(source("v2"), "reloaded");
      expect([key, generation]).toEqual(["plugins[0]", 1]);
      expect(await predict()).toBe("v2");
      const finished = (await t.actions.waitAction({ actionId: long.id })).action!;
      expect(finished.status).toBe(ActionStatus.SUCCEEDED);
      expect(jsonOf(finished.result!.prediction)).toBe("v1");
    });

    it("code that does not load is reported, and the previous version keeps serving until it is fixed", async () => {
      const [, message] = await edit(`${source("v3")}\nexport const broken = ;\n`, "failed");
      expect(message).toMatch(/^config plugins\[0\]\.module: /);
      const listed = (await t.engine.listPlugins({})).plugins[0]!;
      expect(listed.reloadError).toBe(message);
      expect(await predict()).toBe("v2");
      // Fixed, with a model type more: it is served, and the error is gone.
      const extra = `
    "dev.Other": defineModel({ instantiate: () => ({}), predict: () => "other" }),`;
      await edit(source("v3", extra), "reloaded");
      expect(await predict()).toBe("v3");
      const plugin = (await t.engine.listPlugins({})).plugins[0]!;
      expect(plugin.reloadError).toBe("");
      expect(plugin.watched).toBe(true);
      expect(plugin.modelTypes.map((m) => m.name)).toEqual(["dev.Model", "dev.Other"]);
      const other = (await t.engine.createInstance({ modelType: "dev.Other", wait: true })).action!;
      expect(other.status).toBe(ActionStatus.SUCCEEDED);
    });
  });
}
