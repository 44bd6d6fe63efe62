/**
 * A real network served: the MNIST plugin (TensorFlow.js) trained and predicting through
 * the server on Node and on Deno, its bad images refused before a child runs, and its own
 * node:test file passing under both runtimes' test runners (and the ONNX plugin's under Node's).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { digits } from "../plugins/mnist/digits.ts";
import { Tensor } from "../sdk/mod.ts";
import { denoBinary } from "../server/process/runtimes.ts";
import { dataAccess, json, stateOf, tensorArg, tensorOf } from "./helpers/args.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

const run = promisify(execFile);

const image = (pixels: Float32Array) => tensorArg(new Tensor("float32", [1, 784], pixels));

for (const runtime of ["node", "deno"] as const) {
  describe(`the MNIST network served on ${runtime}`, () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer({ backend: { kind: "memory" }, plugins: [{ module: "plugins/mnist/mod.ts", runtime }] });
    });
    afterAll(() => t?.close());

    it("trains on a few hundred digits with loss and accuracy each epoch, and predicts held-out digits far above chance, in batches", async () => {
      const modelId = (await t.engine.createInstance({ modelType: "mnist.MLP", kwargs: { hidden: json([32]) }, wait: true })).action!.modelId;
      const fit = (
        await t.engine.fit({
          modelId,
          args: [dataAccess("mnist.digits", [], { count: json(500) })],
          kwargs: { epochs: json(3), batch_size: json(32) },
          wait: true,
        })
      ).action!;
      expect(fit.error?.message ?? "").toBe("");
      expect(fit.status).toBe(ActionStatus.SUCCEEDED);
      expect(stateOf(fit.state)).toMatchObject({ epoch: 3, epochs: 3, progress: 1, loss: expect.any(Number), accuracy: expect.any(Number) });
      const epochs = fit.logTail.filter((line) => line.includes('"msg":"epoch"')).map((line) => JSON.parse(line) as { epoch: number; loss: number });
      expect(epochs.map((e) => e.epoch)).toEqual([1, 2, 3]);
      expect(epochs[2]!.loss).toBeLessThan(epochs[0]!.loss);

      // 40 held-out digits, one predict each, all at once: they go in batches.
      const held = digits(8000, 40);
      const ids = await Promise.all(
        Array.from(
          { length: 40 },
          async (_, i) => (await t.engine.predict({ modelId, args: [image(held.images.slice(i * 784, (i + 1) * 784))] })).action!.id,
        ),
      );
      const actions = await Promise.all(ids.map(async (id) => (await t.actions.waitAction({ actionId: id })).action!));
      expect(actions.map((a) => a.status)).toEqual(Array(40).fill(ActionStatus.SUCCEEDED));
      const predicted = actions.map((a) => tensorOf(a.result?.prediction, "int32").data[0]);
      const right = predicted.filter((d, i) => d === held.labels[i]).length;
      expect(right, `${right} of 40 right (chance: 4)`).toBeGreaterThanOrEqual(20);
      expect(Math.max(...actions.map((a) => a.batch?.size ?? 1))).toBeGreaterThan(1);
    });

    it("refuses images of the wrong shape or dtype before any child runs, naming the shape it takes", async () => {
      const modelId = (await t.engine.createInstance({ modelType: "mnist.MLP", kwargs: { hidden: json([4]) }, wait: true })).action!.modelId;
      const before = (await t.actions.listActions({})).actions.length;
      await expectStatus(
        t.engine.predict({ modelId, args: [tensorArg(new Tensor("float32", [2, 700], new Float32Array(1400)))] }),
        Status.INVALID_ARGUMENT,
        /^args\[0\]: must be a float32 tensor of shape \[n, 784\], got a float32 tensor of shape \[2, 700\]$/,
      );
      await expectStatus(
        t.engine.predict({ modelId, args: [tensorArg(new Tensor("float64", [1, 784], new Float64Array(784)))] }),
        Status.INVALID_ARGUMENT,
        /^args\[0\]: must be a float32 tensor of shape \[n, 784\], got a float64 tensor of shape \[1, 784\]$/,
      );
      await expectStatus(
        t.engine.fit({
          modelId,
          args: [
            {
              kind: {
                case: "map",
                value: { entries: { images: image(new Float32Array(784)), labels: tensorArg(new Tensor("int64", [1], new BigInt64Array(1))) } },
              },
            },
          ],
        }),
        Status.INVALID_ARGUMENT,
        /^args\[0\]\.labels: must be an int32 tensor of shape \[n\], got an int64 tensor of shape \[1\]$/,
      );
      expect((await t.actions.listActions({})).actions.length).toBe(before);
    });
  });
}

describe("the real-model plugins' own tests", () => {
  const env = { ...process.env, NO_COLOR: "1", DENO_DIR: `${root}/node_modules/.cache/deno` };
  it("pass under node:test (MNIST and ONNX) and deno test (MNIST: ONNX Runtime is a Node addon)", async () => {
    const node = await run(process.execPath, ["--import", "tsx", "--test", "plugins/mnist/mod.test.ts", "plugins/onnx/mod.test.ts"], {
      cwd: root,
      env,
    });
    expect(node.stdout).toMatch(/# pass 10\n# fail 0/);
    const deno = await run(denoBinary(), ["test", "--allow-read", "--allow-env", "plugins/mnist/mod.test.ts"], { cwd: root, env });
    expect(deno.stdout).toMatch(/ok \| 4 passed \| 0 failed/);
  });
});
