import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { DType } from "../gen/plinth/v1/arg_pb.ts";
import { type ArgInit, dataAccess, json, jsonOf, jsonText } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

let t: TestServer;
let spawns = 0;
const countSpawns = () => spawns++;

beforeAll(async () => {
  t = await startTestServer({
    // A child per call, so that a spawn count says whether anything ran.
    engine: { reuse_workers: false, min_idle_workers: 0 },
    http: { address: "127.0.0.1:0" },
    plugins: [
      { module: fixture("schemas-zod.ts") },
      { module: fixture("schemas-valibot.ts"), runtime: "deno" },
      { module: fixture("schemas-json.ts") },
    ],
  });
  t.server.processes.events.on("spawn", countSpawns);
});
afterAll(async () => {
  t?.server.processes.events.off("spawn", countSpawns);
  await t?.close();
});

const model = async (modelType: string, kwargs: Record<string, ArgInit> = {}) => {
  const action = (await t.engine.createInstance({ modelType, kwargs, wait: true })).action!;
  expect(action.error?.message ?? "").toBe("");
  return action.modelId;
};

/** The call is refused with INVALID_ARGUMENT and this message; no child starts and no action is added. */
async function refused(call: () => Promise<unknown>, message: string) {
  const before = (await t.actions.listActions({ pageSize: 1000 })).actions.length;
  const spawnsBefore = spawns;
  await expectStatus(call(), Status.INVALID_ARGUMENT, new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`));
  expect(spawns).toBe(spawnsBefore);
  expect((await t.actions.listActions({ pageSize: 1000 })).actions.length).toBe(before);
}

describe("schemas declared by plugins", () => {
  it("ListPlugins shows each call's JSON Schema, with descriptions and defaults", async () => {
    const { plugins } = await t.engine.listPlugins({});
    const zod = plugins.find((p) => p.name === "zschema")!;
    const type = zod.modelTypes.find((m) => m.name === "zschema.Model")!;
    expect(type.schemas.map((s) => s.call)).toEqual(["instantiate", "fit", "predict"]);
    const instantiate = type.schemas[0]!;
    expect(instantiate.kwargs).toMatchObject({
      type: "object",
      properties: { depth: { type: "integer", minimum: 1, default: 3, description: "how deep the tree grows" } },
    });
    expect(instantiate.args).toBeUndefined();
    const fit = type.schemas[1]!;
    expect(fit.args).toMatchObject({
      type: "array",
      prefixItems: [{ description: "feature rows" }, { items: { enum: ["setosa", "versicolor", "virginica"] } }],
    });
    expect(fit.kwargs).toMatchObject({ additionalProperties: false });
    expect(fit.state).toMatchObject({ properties: { progress: { type: "number", minimum: 0, maximum: 1 } } });
    const rows = zod.dataAccess.find((d) => d.name === "zschema.rows")!;
    expect(rows.schemas).toHaveLength(1);
    expect(rows.schemas[0]).toMatchObject({ call: "data_access", args: { prefixItems: [{ type: "integer", minimum: 1, maximum: 1000 }] } });
    expect(zod.dataAccess.find((d) => d.name === "zschema.words")!.schemas).toEqual([]);
    // A closed object says so, whatever the library; a loose one says it takes any.
    expect(instantiate.kwargs).toMatchObject({ additionalProperties: false });
    const valibot = plugins.find((p) => p.name === "vschema")!.modelTypes[0]!;
    expect(valibot.schemas.find((c) => c.call === "predict")).toMatchObject({
      kwargs: { properties: { offset: { type: "number", minimum: 0, default: 0 } }, additionalProperties: false },
    });
    expect(valibot.schemas.find((c) => c.call === "fit")).toMatchObject({
      kwargs: { properties: { rate: { type: "number" } }, additionalProperties: {} },
    });
    const plain = plugins.find((p) => p.name === "jschema")!.modelTypes[0]!;
    expect(plain.schemas[0]!.kwargs).toEqual({
      type: "object",
      properties: { round: { type: "boolean", default: false } },
      additionalProperties: false,
    });
  });

  it("over HTTP the schemas are plain JSON objects, as grpcurl and curl show them", async () => {
    const response = await fetch(`http://127.0.0.1:${t.server.httpPort}/plinth.v1.EngineService/ListPlugins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    const body = (await response.json()) as { plugins: { name: string; modelTypes: { schemas: { call: string; kwargs?: unknown }[] }[] }[] };
    const zod = body.plugins.find((p) => p.name === "zschema")!;
    expect(zod.modelTypes[0]!.schemas[0]).toMatchObject({ call: "instantiate", kwargs: { properties: { depth: { default: 3 } } } });
  });

  it("refuses a bad argument before anything runs, naming its path, what it must be and what it got", async () => {
    await refused(
      () => t.engine.createInstance({ modelType: "zschema.Model", kwargs: { depth: json("ten") } }),
      'kwargs.depth: must be an integer ≥ 1, got "ten"',
    );
    await refused(
      () => t.engine.createInstance({ modelType: "zschema.Model", kwargs: { depth: json(0) } }),
      "kwargs.depth: must be an integer ≥ 1, got 0",
    );
    const id = await model("zschema.Model");
    const x = json([[1, 2, 3, 4]]);
    await refused(
      () => t.engine.fit({ modelId: id, args: [x, json(["rose"])] }),
      'args[1][0]: must be one of "setosa", "versicolor", "virginica", got "rose"',
    );
    await refused(() => t.engine.fit({ modelId: id, args: [x] }), "args: must have at least 2 items");
    await refused(
      () => t.engine.fit({ modelId: id, args: [x, json(["setosa"])], kwargs: { iterations: jsonText(1.5), epochs: json(3) } }),
      [
        "kwargs.epochs: not a keyword argument of fit on zschema.Model; it takes iterations",
        "kwargs.iterations: must be an integer ≥ 1, got 1.5",
      ].join("; "),
    );
    await refused(() => t.engine.fit({ modelId: id, args: [json([[1, "2"]]), json([])] }), 'args[0][0][1]: must be a number, got "2"');
  });

  it("checks a data-access argument's own arguments before anything runs", async () => {
    const id = await model("zschema.Model");
    await refused(
      () => t.engine.fit({ modelId: id, args: [dataAccess("zschema.rows", [json(5000)]), json(["setosa"])] }),
      "args[0].args[0]: must be an integer from 1 to 1000, got 5000",
    );
  });

  it("runs good arguments with the schema's defaults applied in the plugin, and types them there", async () => {
    const id = await model("zschema.Model");
    const fitted = (await t.engine.fit({ modelId: id, args: [dataAccess("zschema.rows", [json(3)]), json(["setosa", "virginica"])], wait: true }))
      .action!;
    expect(fitted.status).toBe(ActionStatus.SUCCEEDED);
    const instance = JSON.parse(new TextDecoder().decode((await t.engine.getModel({ modelId: id, includeInstance: true })).model!.instance));
    expect(instance).toEqual({ depth: 3, trained: 3, labels: 2 });
  });

  it("fails the action with invalid_argument when a data-access result does not match the argument's schema", async () => {
    const id = await model("zschema.Model");
    const action = (await t.engine.fit({ modelId: id, args: [dataAccess("zschema.words"), json(["setosa"])], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.code).toBe("invalid_argument");
    expect(action.error?.message).toBe(
      'the data-access results do not match the schema: args[0][0][0]: must be a number, got "a"; args[0][0][1]: must be a number, got "b"',
    );
  });

  it("leaves what JSON cannot say to the plugin's validator, whose failure is the action's invalid_argument", async () => {
    const id = await model("zschema.Model");
    const tensor = { kind: { case: "tensor" as const, value: { dtype: DType.FLOAT32, shape: [1, 2], data: new Uint8Array(8) } } };
    const ok = (await t.engine.predict({ modelId: id, args: [tensor], wait: true })).action!;
    expect(jsonOf(ok.result!.prediction)).toEqual({ depth: 3, tensor: [1, 2] });
    const bytes = { kind: { case: "bytes" as const, value: new Uint8Array(3) } };
    const bad = (await t.engine.predict({ modelId: id, args: [bytes], wait: true })).action!;
    expect(bad.status).toBe(ActionStatus.FAILED);
    expect(bad.error?.code).toBe("invalid_argument");
    expect(bad.error?.message).toMatch(/^args/);
  });

  it("checks a valibot plugin's arguments (on Deno) and applies its defaults", async () => {
    const id = await model("vschema.Model");
    await refused(
      () => t.engine.predict({ modelId: id, args: [json([1, 2])], kwargs: { offset: json(-1) } }),
      "kwargs.offset: must be a number ≥ 0, got -1",
    );
    const ok = (await t.engine.predict({ modelId: id, args: [json([1, 2])], wait: true })).action!;
    expect(jsonOf(ok.result!.prediction)).toEqual([2, 4]);
  });

  it("checks a plain JSON Schema's arguments", async () => {
    const id = await model("jschema.Model");
    await refused(() => t.engine.predict({ modelId: id, args: [json("median"), json([1])] }), 'args[0]: must be one of "mean", "max", got "median"');
    await refused(() => t.engine.predict({ modelId: id, args: [json("max"), json([])] }), "args[1]: must have at least 1 item");
    await refused(() => t.engine.predict({ modelId: id, args: [json("max"), json([1]), json(2)] }), "args: must have at most 2 items");
    await refused(
      () => t.engine.predict({ modelId: id, args: [json("max"), json([1])], kwargs: { round: json("yes") } }),
      'kwargs.round: must be a boolean, got "yes"',
    );
    const ok = (await t.engine.predict({ modelId: id, args: [json("max"), json([1, 5, 2])], wait: true })).action!;
    expect(jsonOf(ok.result!.prediction)).toBe(5);
  });
});

describe("keyword arguments a function does not declare", () => {
  it("are refused before anything runs, naming them and the ones it takes, whatever the schema library", async () => {
    // zod's z.object, which would drop the key and run with the defaults.
    await refused(
      () => t.engine.createInstance({ modelType: "zschema.Model", kwargs: { depht: json(5) } }),
      "kwargs.depht: not a keyword argument of instantiate on zschema.Model; it takes depth, split",
    );
    // Below a keyword, a key an object schema that says so does not take.
    await refused(
      () => t.engine.createInstance({ modelType: "zschema.Model", kwargs: { split: json({ min: 1, mn: 2 }) } }),
      "kwargs.split.mn: not a key of kwargs.split; it takes min",
    );
    // valibot's v.object, on Deno.
    const vid = await model("vschema.Model");
    await refused(
      () => t.engine.predict({ modelId: vid, args: [json([1])], kwargs: { ofset: json(1) } }),
      "kwargs.ofset: not a keyword argument of predict on vschema.Model; it takes offset",
    );
    // A plain JSON Schema that names its keywords, without additionalProperties.
    const jid = await model("jschema.Model");
    await refused(
      () => t.engine.predict({ modelId: jid, args: [json("max"), json([1])], kwargs: { rond: json(true) } }),
      "kwargs.rond: not a keyword argument of predict on jschema.Model; it takes round",
    );
    // A data-access argument's own keywords.
    const zid = await model("zschema.Model");
    await refused(
      () => t.engine.fit({ modelId: zid, args: [dataAccess("zschema.rows", [json(3)], { begin: json(1) }), json(["setosa"])] }),
      "args[0].kwargs.begin: not a keyword argument of zschema.rows; it takes start",
    );
  });

  it("are taken where the schema says so (looseObject, catchall) or where no kwargs schema is declared", async () => {
    // valibot's looseObject, whose JSON Schema alone does not say it takes any.
    const vid = await model("vschema.Model");
    const fitted = (await t.engine.fit({ modelId: vid, kwargs: { momentum: json(0.9) }, wait: true })).action!;
    expect(fitted.status).toBe(ActionStatus.SUCCEEDED);
    const instance = JSON.parse(new TextDecoder().decode((await t.engine.getModel({ modelId: vid, includeInstance: true })).model!.instance));
    expect(instance.fitted).toEqual({ rate: 0.1, momentum: 0.9 });
    // zod's catchall, as a keyword argument of a predict that declares no kwargs schema.
    const zid = await model("zschema.Model");
    const tagged = dataAccess("zschema.tagged", [], { tag: json("a"), weight: json(2) });
    const predicted = (await t.engine.predict({ modelId: zid, args: [json([[1, 2]])], kwargs: { tagged, anything: json(1) }, wait: true })).action!;
    expect(predicted.status).toBe(ActionStatus.SUCCEEDED);
    expect(jsonOf(predicted.result!.prediction)).toEqual({ depth: 3, rows: 1 });
    // The fit's data access ran with its declared keyword.
    const rows = (
      await t.engine.fit({ modelId: zid, args: [dataAccess("zschema.rows", [json(2)], { start: json(10) }), json(["setosa"])], wait: true })
    ).action!;
    expect(rows.status).toBe(ActionStatus.SUCCEEDED);
  });
});

describe("a schema that is not JSON Schema", () => {
  it("stops the server at start, naming the plugin's config key, the function and why", async () => {
    await expect(startTestServer({ plugins: [{ module: fixture("schemas-broken.ts") }] })).rejects.toThrow(
      /^config plugins\[0\]\.module: broken_schema\.Model's instantiate kwargs schema does not compile: schema is invalid: data\/type must be equal to one of the allowed values/,
    );
  });
});
