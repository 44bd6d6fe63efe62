/**
 * The onnx plugin on a real server: the MNIST network of plugins/mnist, trained briefly
 * and written as ONNX by scripts/build-onnx.ts, served from a path inside the folder its
 * config allows (with native addons allowed), giving TensorFlow.js's own predictions;
 * concurrent predicts batched; paths and files it must refuse, refused.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../gen/plinth/v1/arg_pb.ts";
import { digits, PIXELS } from "../plugins/mnist/digits.ts";
import type { Network } from "../plugins/mnist/network.ts";
import { tf } from "../plugins/mnist/network.ts";
import { buildMnistOnnx } from "../scripts/build-onnx.ts";
import { Tensor } from "../sdk/mod.ts";
import { parseConfig } from "../server/config/load.ts";
import { json, stateOf, tensorArg, tensorOf } from "./helpers/args.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const HELD_OUT = 50;
const onnxPlugin = join(root, "plugins/onnx/mod.ts");

/** The float32 tensor `name` of a map prediction. */
function output(prediction: Arg | undefined, name: string): Tensor<"float32"> {
  if (prediction?.kind.case !== "map") throw new Error(`expected a map, got ${prediction?.kind.case}`);
  return tensorOf(prediction.kind.value.entries[name], "float32");
}

const argmax = (row: ArrayLike<number>) => Array.prototype.indexOf.call(row, Math.max(...Array.from(row))) as number;

describe("the onnx plugin, serving the MNIST network from a path it may read", () => {
  let t: TestServer;
  let models: string;
  let network: Network;
  /** TF.js's probabilities for the held-out digits, [HELD_OUT, 10]. */
  let expected: Float32Array;
  let images: Float32Array;

  beforeAll(async () => {
    models = tempDir("onnx-models-");
    const built = await buildMnistOnnx({ hidden: 32, epochs: 2, count: 300 });
    network = built.network;
    writeFileSync(join(models, "mnist.onnx"), built.bytes);
    writeFileSync(join(models, "broken.onnx"), new Uint8Array([8, 1, 0xff, 0xff]));
    images = digits(8000, HELD_OUT).images;
    expected = tf.tidy(() => (network.model.predict(tf.tensor2d(images, [HELD_OUT, PIXELS])) as tf.Tensor2D).dataSync() as Float32Array);
    t = await startTestServer({
      backend: { kind: "memory" },
      // One child in all: the gated predict below holds it while the digits queue.
      engine: { max_children: 1 },
      plugins: [{ module: onnxPlugin, permissions: { read: [models], addons: true } }, { module: fixture("serving.ts") }],
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const create = async (file: string) => (await t.engine.createInstance({ modelType: "onnx.Model", args: [json(file)], wait: true })).action!;

  it("creates the model from a path in the allowed folder; the create's state describes its inputs and outputs", async () => {
    const action = await create(join(models, "mnist.onnx"));
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    const model = (await t.engine.getModel({ modelId: action.modelId })).model!;
    // The model points at its create, whose state says what it takes and gives.
    const shown = (await t.actions.getAction({ actionId: model.actionId })).action!;
    expect(stateOf(shown.state)).toEqual({
      inputs: [{ name: "images", dtype: "float32", shape: ["N", PIXELS], tensor: true }],
      outputs: [{ name: "probabilities", dtype: "float32", shape: ["N", 10], tensor: true }],
      batchable: true,
    });
  });

  it("predicts the held-out digits as the TensorFlow.js model does, digit by digit in batches, and all at once", async () => {
    const modelId = (await create(join(models, "mnist.onnx"))).modelId;
    // A predict that holds the server's one child, so that every digit's predict queues behind it.
    const gate = join(tempDir(), "open");
    const gated = (await t.engine.createInstance({ modelType: "serving.Gated", wait: true })).action!.modelId;
    const holder = (await t.engine.predict({ modelId: gated, kwargs: { gate: json(gate) } })).action!.id;
    await expect.poll(async () => (await t.actions.getAction({ actionId: holder })).action!.status, { timeout: 60_000 }).toBe(ActionStatus.EXECUTING);
    const one = (i: number) => new Tensor("float32", [1, PIXELS], images.slice(i * PIXELS, (i + 1) * PIXELS));
    const ids = await Promise.all(
      Array.from({ length: HELD_OUT }, async (_, i) => (await t.engine.predict({ modelId, args: [tensorArg(one(i))] })).action!.id),
    );
    writeFileSync(gate, "");
    const ended = await Promise.all(ids.map(async (id) => (await t.actions.waitAction({ actionId: id })).action!));
    expect(ended.map((a) => a.status)).toEqual(ended.map(() => ActionStatus.SUCCEEDED));
    // Queued together while the child was held, they went to it as one batch: one run of ONNX Runtime on 50 rows, split back.
    expect(new Set(ended.map((a) => a.batch?.id)).size).toBe(1);
    expect(ended.map((a) => a.batch?.size)).toEqual(ended.map(() => HELD_OUT));
    for (const [i, action] of ended.entries()) {
      const p = output(action.result!.prediction, "probabilities");
      expect(p.shape).toEqual([1, 10]);
      const want = expected.subarray(i * 10, (i + 1) * 10);
      expect(argmax(p.data)).toBe(argmax(want));
      for (const [j, v] of p.data.entries()) expect(Math.abs(v - want[j]!)).toBeLessThan(1e-5);
    }
    // All of them in one predict, by input name.
    const { action } = await t.engine.predict({
      modelId,
      args: [{ kind: { case: "map", value: { entries: { images: tensorArg(new Tensor("float32", [HELD_OUT, PIXELS], images)) } } } }],
      wait: true,
    });
    const all = output(action!.result!.prediction, "probabilities");
    expect(all.shape).toEqual([HELD_OUT, 10]);
    for (const [j, v] of all.data.entries()) expect(Math.abs(v - expected[j]!)).toBeLessThan(1e-5);
  });

  it("refuses a path outside the allowed folder, naming the key that allows it", async () => {
    const elsewhere = join(tempDir(), "mnist.onnx");
    writeFileSync(elsewhere, new Uint8Array(8));
    const action = await create(elsewhere);
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error).toMatchObject({
      code: "permission_denied",
      message:
        `args[0]: the onnx plugin may not read ${JSON.stringify(elsewhere)}; list its folder in the plugin's config, ` +
        "plugins[i].permissions.read (with plugins[i].permissions.addons: true), or send the file's bytes",
    });
    // A relative path is the server's working directory's (the children's too); the server
    // shows paths under its config's folder (here the working directory) relative to it.
    const relative = await create("models/mnist.onnx");
    expect(relative.error?.message).toContain(
      `may not read "models/mnist.onnx" (a relative path is taken from the server's working directory, ${process.cwd()})`,
    );
  });

  it("fails the create of a file that does not load with ONNX Runtime's reason, from a path or as bytes", async () => {
    const fromPath = await create(join(models, "broken.onnx"));
    expect(fromPath.status).toBe(ActionStatus.FAILED);
    expect(fromPath.error).toMatchObject({
      code: "invalid_argument",
      message: expect.stringMatching(/^the ONNX file does not load: .*protobuf parsing failed/),
    });
    const { action } = await t.engine.createInstance({
      modelType: "onnx.Model",
      args: [{ kind: { case: "bytes", value: new TextEncoder().encode("not a model") } }],
      wait: true,
    });
    expect(action!.error).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/^the ONNX file does not load: /) });
  });

  it("refuses a missing input name and a wrong width, naming what the model takes", async () => {
    const modelId = (await create(join(models, "mnist.onnx"))).modelId;
    const x = new Tensor("float32", [2, PIXELS], images.slice(0, 2 * PIXELS));
    const wrongName = await t.engine.predict({ modelId, args: [{ kind: { case: "map", value: { entries: { imgs: tensorArg(x) } } } }], wait: true });
    expect(wrongName.action!.error).toMatchObject({
      code: "invalid_argument",
      message: `args[0]: no input "imgs"; the model takes images (float32 [N, ${PIXELS}])`,
    });
    const narrow = new Tensor("float32", [1, 700], new Float32Array(700));
    const wrongWidth = await t.engine.predict({ modelId, args: [tensorArg(narrow)], wait: true });
    expect(wrongWidth.action!.error).toMatchObject({
      code: "invalid_argument",
      message: `args[0]: must be a float32 tensor of shape [N, ${PIXELS}], got float32 [1, 700]`,
    });
  });
});

describe("the onnx plugin's config", () => {
  it("refuses permissions.addons on a Deno plugin at load, naming the key", () => {
    expect(() => parseConfig({ plugins: [{ module: onnxPlugin, runtime: "deno", permissions: { addons: true } }] }, root)).toThrow(
      /^config plugins\[0\]\.permissions\.addons: Node only: a Deno plugin cannot load native addons/,
    );
  });

  it("under Node's permission model without addons: true, the plugin does not load, naming the key", async () => {
    await expect(startTestServer({ backend: { kind: "memory" }, plugins: [{ module: onnxPlugin, permissions: { read: [] } }] })).rejects.toThrow(
      /loading addons is disabled.*\(allow it with plugins\[0\]\.permissions\.addons: true\)/s,
    );
  });
});
