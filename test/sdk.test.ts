import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import iris from "../plugins/iris/mod.ts";
import plugin from "../plugins/system-test/mod.ts";
import { type DType, defineDataAccess, defineModel, definePlugin, type Plugin, PluginError, Tensor, withInstance } from "../sdk/mod.ts";
import { testPlugin } from "../sdk/testing.ts";
import { decodeValue, encodeValue } from "../sdk/worker/codec.ts";
import { encodeFrame, FrameDecoder, FrameTooLargeError } from "../sdk/worker/frames.ts";
import { denoBinary } from "../server/process/runtimes.ts";
import { batchRefusals } from "./fixtures/failing/batch-refusals.ts";
import serving from "./fixtures/plugins/serving.ts";
import { root } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

describe("testPlugin: a plugin unit-tested in-process", () => {
  it("runs the system-test plugin's workflow and records its reports", async () => {
    const h = testPlugin(plugin);
    let model = await h.instantiate("systest.Model", [1], { a: "b" });
    model = await h.fit(model, [2]);
    const { prediction } = await h.predict(model, [3], { sleep: 0.05 });
    expect(prediction).toMatchObject({ args: [3], instance: { args: { args: [1], kwargs: { a: "b" } }, fits: [{ args: [2], kwargs: {} }] } });
    expect(h.calls[2]!.reports.at(-1)).toEqual({ progress: 1 });
  });

  it("aborts ctx.signal like a cancel would", async () => {
    const h = testPlugin(plugin);
    const model = await h.instantiate("systest.Model");
    const controller = new AbortController();
    const running = h.predict(model, [], { sleep: 30 }, { signal: controller.signal });
    controller.abort(new DOMException("cancelled", "AbortError"));
    await expect(running).rejects.toThrow("cancelled");
  });

  it("trains the Iris model in-process above 0.9", async () => {
    const h = testPlugin(iris);
    const x = await h.dataAccess("iris.inputs");
    const y = await h.dataAccess("iris.outputs");
    const model = await h.fit(await h.instantiate("iris.DecisionTree"), [x, y]);
    expect((h.calls.at(-1)!.reports.at(-1) as { accuracy: number }).accuracy).toBeGreaterThan(0.9);
    const { prediction } = await h.predict(model, [[[5.1, 3.5, 1.4, 0.2]]]);
    expect(prediction).toEqual(["setosa"]);
  });

  it("refuses a predict that changes its instance in place (the engine would serve the change to the next predict); withInstance is the way", async () => {
    const h = testPlugin(serving);
    const model = await h.instantiate("serving.Mutator");
    await expect(h.predict(model)).rejects.toThrow(
      "predict on serving.Mutator changed its instance in place: the engine keeps instances between calls, so the next predict would see the change; copy it, or return withInstance(prediction, instance)",
    );
    const first = await h.predict(model, [], { store: true });
    expect(first.prediction).toBe(1);
    expect((await h.predict(first.model, [], { store: true })).prediction).toBe(2);
    // One that changes nothing passes, its typed array serialized as a view of its own memory.
    const weights = await h.instantiate("serving.Weights", [], { size: 64 });
    expect((await h.predict(weights)).prediction).toMatchObject({ fits: 0, size: 64 });
  });

  it("sees a change in place through a serialize that returns a view of the instance's memory", async () => {
    const h = testPlugin(
      definePlugin({
        name: "view",
        models: {
          "view.Model": defineModel({
            instantiate: () => new Float64Array(4),
            predict: (_ctx, model) => {
              model[0] = (model[0] ?? 0) + 1;
              return model[0];
            },
            serialize: (model) => new Uint8Array(model.buffer, model.byteOffset, model.byteLength),
            deserialize: (bytes) => new Float64Array(bytes.slice().buffer),
          }),
        },
      }),
    );
    await expect(h.predict(await h.instantiate("view.Model"))).rejects.toThrow("predict on view.Model changed its instance in place");
  });

  it("names the missing function", async () => {
    const h = testPlugin(plugin);
    await expect(h.instantiate("nope.Model")).rejects.toThrow("plugin systest has no model type nope.Model");
  });
});

describe("schemas type a plugin's functions", () => {
  it("run's arguments and ctx.report follow the schemas (checked by the type check), and the harness validates", async () => {
    const model = defineModel({
      instantiate: {
        kwargs: z.object({ depth: z.number().int().default(2) }),
        state: z.object({ progress: z.number() }),
        run: (ctx, _args, { depth }) => {
          ctx.report({ progress: 1 });
          // @ts-expect-error: the state schema says progress is a number
          if (depth < 0) ctx.report({ progress: "half" });
          // @ts-expect-error: depth is a number
          const name: string = depth;
          return { depth, name };
        },
      },
    });
    const range = defineDataAccess({
      args: z.tuple([z.number()]),
      // @ts-expect-error: n is a number, which has no length
      run: (_ctx, [n]) => n.length,
    });
    const h = testPlugin({ name: "typed", models: { "typed.Model": model }, dataAccess: { "typed.range": range } });
    const created = await h.instantiate("typed.Model");
    expect(JSON.parse(new TextDecoder().decode(created.instance))).toEqual({ depth: 2, name: 2 });
    await expect(h.instantiate("typed.Model", [], { depth: "deep" })).rejects.toMatchObject({ code: "invalid_argument" });
    // A keyword it does not declare, refused as the server would, though zod's object would drop it.
    await expect(h.instantiate("typed.Model", [], { dpth: 3 })).rejects.toMatchObject({
      code: "invalid_argument",
      message: "kwargs.dpth: not a keyword argument of instantiate on typed.Model; it takes depth",
    });
  });
});

describe("testPlugin: batched predicts", () => {
  const pid = process.pid;

  it("answers each item of a batch on its own: a poisoned one fails alone with its code, the others get their values; predict is a batch of one", async () => {
    const h = testPlugin(serving);
    const model = await h.instantiate("serving.Batched16");
    const outcomes = await h.predictBatch(model, [
      { args: [1] },
      { args: [2], kwargs: { poison: true } },
      { args: [3], kwargs: { report: "third" } },
    ]);
    expect(outcomes).toEqual([
      { prediction: { pid, size: 3, index: 0, value: 1 } },
      { error: expect.objectContaining({ name: "PluginError", code: "invalid_argument", message: "poisoned item" }) },
      { prediction: { pid, size: 3, index: 2, value: 3 } },
    ]);
    expect(h.calls.at(-1)!.items!.map((item) => item.reports)).toEqual([[], [], [{ item: "third" }]]);

    expect(await h.predict(model, [7])).toEqual({ prediction: { pid, size: 1, index: 0, value: 7 }, model });
    await expect(h.predict(model, [8], { poison: true })).rejects.toMatchObject({ code: "invalid_argument", message: "poisoned item" });
  });

  it("checks each item against the schemas on its own, and types the items by them; withInstance fails its item, a throw fails them all", async () => {
    let ran: number[] = [];
    const h = testPlugin(
      definePlugin({
        name: "typed",
        models: {
          "typed.Double": defineModel({
            instantiate: () => ({ factor: 2 }),
            predict: {
              batch: { maxSize: 8, maxWaitMs: 1 },
              args: z.tuple([z.number()]),
              kwargs: z.object({ store: z.boolean().default(false), fail: z.boolean().default(false) }),
              state: z.object({ items: z.number() }),
              run: (ctx, model, items) => {
                ctx.report({ items: items.length });
                // @ts-expect-error: the state schema says items is a number
                if (items.length < 0) items[0]?.report({ items: "none" });
                if (items.some((item) => item.kwargs.fail)) throw new PluginError("all_failed", "asked to fail");
                ran = items.map((item) => item.args[0]);
                // The types refuse withInstance here; a plugin in JavaScript meets the item's failure.
                return items.map((item) => (item.kwargs.store ? (withInstance(0, model) as unknown as number) : item.args[0] * model.factor));
              },
            },
          }),
        },
      }),
    );
    const model = await h.instantiate("typed.Double");
    const outcomes = await h.predictBatch(model, [
      { args: [2] },
      { args: ["two"] },
      { args: [3], kwargs: { stor: true } },
      { args: [4], kwargs: { store: true } },
    ]);
    expect(outcomes).toEqual([
      { prediction: 4 },
      { error: expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining("args[0]") }) },
      {
        error: expect.objectContaining({
          code: "invalid_argument",
          message: expect.stringContaining("kwargs.stor: not a keyword argument of predict on typed.Double"),
        }),
      },
      {
        error: new TypeError("predict of typed.Double is batched, so it may not change its model: return the prediction alone, or drop batch"),
      },
    ]);
    // Only the items that passed their schemas ran.
    expect(ran).toEqual([2, 4]);
    expect(h.calls.at(-1)!.reports).toEqual([{ items: 2 }]);

    const failed = await h.predictBatch(model, [{ args: [1] }, { args: [2], kwargs: { fail: true } }, { args: [] }]);
    expect(failed).toEqual([
      { error: expect.objectContaining({ code: "all_failed" }) },
      { error: expect.objectContaining({ code: "all_failed" }) },
      { error: expect.objectContaining({ code: "invalid_argument" }) },
    ]);
  });

  it("fails the whole batch when run returns the wrong number of results, or no array, saying how many for how many", async () => {
    const h = testPlugin(serving);
    const model = await h.instantiate("serving.BadCount");
    await expect(h.predictBatch(model, [{}, {}, {}, {}])).rejects.toThrow(
      new TypeError("predict of serving.BadCount returned 3 results for 4 items"),
    );
    await expect(h.predict(model)).rejects.toThrow(new TypeError("predict of serving.BadCount returned 0 results for 1 item"));

    const shapeless = (returned: unknown): Plugin => ({
      name: "shapeless",
      models: { "shapeless.Model": { instantiate: () => ({}), predict: { batch: { maxSize: 2, maxWaitMs: 0 }, run: () => returned as never } } },
    });
    const object = testPlugin(shapeless({ 0: 1, 1: 2 }));
    await expect(object.predictBatch(await object.instantiate("shapeless.Model"), [{}, {}])).rejects.toThrow(
      new TypeError("predict of shapeless.Model returned an object instead of an array of 2 results"),
    );
    const nothing = testPlugin(shapeless(undefined));
    await expect(nothing.predictBatch(await nothing.instantiate("shapeless.Model"), [{}])).rejects.toThrow(
      new TypeError("predict of shapeless.Model returned undefined instead of an array of 1 result"),
    );
  });

  it("aborts a cancelled item's signal alone while the others finish; cancelling the batch aborts every item", async () => {
    const h = testPlugin(serving);
    const model = await h.instantiate("serving.Batched4");
    const gate = join(tempDir(), "gate");
    const cancel = new AbortController();
    const running = h.predictBatch(
      model,
      [0, 1, 2, 3].map((i) => ({ args: [i], kwargs: { gate }, ...(i === 2 ? { signal: cancel.signal } : {}) })),
    );
    cancel.abort(new DOMException("item 2 cancelled", "AbortError"));
    writeFileSync(gate, "");
    expect(await running).toEqual([
      { prediction: { pid, size: 4, index: 0, value: 0 } },
      { prediction: { pid, size: 4, index: 1, value: 1 } },
      { error: expect.objectContaining({ name: "AbortError", message: "item 2 cancelled" }) },
      { prediction: { pid, size: 4, index: 3, value: 3 } },
    ]);

    const whole = new AbortController();
    const closed = join(tempDir(), "never");
    const all = h.predictBatch(model, [{ kwargs: { gate: closed } }, { kwargs: { gate: closed } }], { signal: whole.signal });
    whole.abort(new DOMException("batch cancelled", "AbortError"));
    expect(await all).toEqual([
      { error: expect.objectContaining({ name: "AbortError", message: "batch cancelled" }) },
      { error: expect.objectContaining({ name: "AbortError", message: "batch cancelled" }) },
    ]);
  });

  it("refuses a batched predict that changes its instance in place", async () => {
    const h = testPlugin(
      definePlugin({
        name: "counting",
        models: {
          "counting.Model": defineModel({
            instantiate: () => ({ seen: 0 }),
            predict: {
              batch: { maxSize: 4, maxWaitMs: 1 },
              run: (_ctx, model, items) => {
                model.seen += items.length;
                return items.map(() => model.seen);
              },
            },
          }),
        },
      }),
    );
    await expect(h.predictBatch(await h.instantiate("counting.Model"), [{}, {}])).rejects.toThrow(
      "predict on counting.Model changed its instance in place",
    );
  });

  it("refuses a batch larger, or a wait longer, than the server takes", () => {
    const bounded = (maxSize: number, maxWaitMs: number): Plugin => ({
      name: "bounded",
      models: {
        "bounded.Model": defineModel({
          instantiate: () => ({}),
          predict: { batch: { maxSize, maxWaitMs }, run: (_ctx, _model, items) => items.map(() => null) },
        }),
      },
    });
    expect(() => testPlugin(bounded(65_536, 3_600_000))).not.toThrow();
    expect(() => testPlugin(bounded(65_537, 0))).toThrow(
      new TypeError('models["bounded.Model"].predict.batch.maxSize must be at most 65536 (got 65537)'),
    );
    expect(() => testPlugin(bounded(1, 3_600_001))).toThrow(
      new TypeError('models["bounded.Model"].predict.batch.maxWaitMs must be at most 3600000 (an hour) (got 3600001)'),
    );
  });

  it.each(batchRefusals)("refuses to load %s, naming the key", async (file, message) => {
    const { default: bad } = (await import(`./fixtures/failing/${file}`)) as { default: Plugin };
    expect(() => testPlugin(bad)).toThrow(new TypeError(message));
  });
});

describe("values and frames", () => {
  it("decodes a tensor from a view into a larger buffer, as Node hands them out", () => {
    const t = new Tensor("float64", [3], new Float64Array([1.5, 2.5, 3.5]));
    const wire = encodeValue(t);
    // Put the bytes at an odd offset inside a bigger Buffer, like a pooled socket read.
    const pool = Buffer.alloc(64, 0xff);
    const bytes = (wire.kind.value as { data: Uint8Array }).data;
    pool.set(bytes, 9);
    (wire.kind.value as { data: Uint8Array }).data = pool.subarray(9, 9 + bytes.byteLength);
    expect(Array.from((decodeValue(wire) as Tensor).data as Float64Array)).toEqual([1.5, 2.5, 3.5]);
  });

  it("types a tensor's data by its dtype, and gives its columns and a JSON view", () => {
    const t = new Tensor("float32", [2, 3], new Float32Array([1, 2, 3, 4, 5, 6]));
    const data: Float32Array = t.data; // no cast: Tensor<"float32"> holds a Float32Array
    expect(data.length).toBe(6);
    expect(t.column(2)).toEqual([3, 6]);
    expect(t.toRows()).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    const unknown: Tensor = Tensor.fromBytes("int64", [2], new Uint8Array(new BigInt64Array([7n, -1n]).buffer));
    expect(unknown.is("float32")).toBe(false);
    if (!unknown.is("int64")) throw new Error("expected an int64 tensor");
    const big: bigint = unknown.at(1);
    expect(big).toBe(-1n);
    expect(JSON.parse(JSON.stringify(unknown))).toEqual({ dtype: "int64", shape: [2], data: ["7", "-1"] });
  });

  it("rejects a tensor whose data does not match its shape", () => {
    expect(() => new Tensor("int32", [2, 2], new Int32Array(3))).toThrow("tensor of shape [2, 2] needs 4 elements, got 3");
    // The types refuse it; a caller without them (JavaScript, a dtype known only at run time) meets the check.
    expect(() => new Tensor<DType>("int32", [2], new Float32Array(2))).toThrow("tensor of dtype int32 needs a Int32Array");
  });

  it("refuses a frame over the limit as soon as its header arrives", () => {
    const decoder = new FrameDecoder(8);
    expect(() => decoder.push(encodeFrame(new Uint8Array(9)).subarray(0, 4))).toThrow(FrameTooLargeError);
  });

  it("passes its core tests under Deno too (deno test)", async () => {
    const { stdout } = await promisify(execFile)(denoBinary(), ["test", "--quiet", "test/deno/"], {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1", DENO_DIR: `${root}node_modules/.cache/deno` },
    });
    expect(stdout).toMatch(/ok \| 5 passed \| 0 failed/);
  });
});

describe("two copies of the SDK agree", () => {
  it("on what a tensor is, and on a tensor guard's spec in a published schema: a plugin may bring its own copy", async () => {
    // Another instance of the same modules, as a plugin's own node_modules or build would give.
    const anotherCopy = "../sdk/values.ts?another-copy";
    const other = (await import(anotherCopy)) as typeof import("../sdk/values.ts");
    const { jsonSchemaText } = await import("../sdk/schema.ts");
    expect(other.Tensor).not.toBe(Tensor);
    const theirs = new other.Tensor("float32", [2], new Float32Array([1, 2]));
    expect(theirs instanceof Tensor).toBe(true);
    expect(new Tensor("int32", [1], new Int32Array([1])) instanceof other.Tensor).toBe(true);
    expect({ dtype: "float32", shape: [2], data: new Float32Array(2) } instanceof Tensor).toBe(false);
    expect(encodeValue(theirs).kind.case).toBe("tensor");
    const schema = z.tuple([z.custom(other.isTensor("float32", [-1, 4]))]);
    expect(JSON.parse(jsonSchemaText(schema, "args")).prefixItems[0]["x-plinth-tensor"]).toEqual({ dtype: "float32", shape: [-1, 4] });
  });
});
