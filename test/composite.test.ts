import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPlinthClient, dataAccess as ref } from "../client/mod.ts";
import { ActionStatus, ActionView } from "../gen/plinth/v1/action_pb.ts";
import { ArgKind } from "../gen/plinth/v1/arg_pb.ts";
import { PredictRequestSchema, PredictResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { Tensor } from "../sdk/mod.ts";
import { dataAccess, json, jsonOf } from "./helpers/args.ts";
import { fixture, startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

let t: TestServer;
let modelId: string;
beforeAll(async () => {
  t = await startTestServer({ http: { address: "127.0.0.1:0" }, plugins: [{ module: fixture("composite.ts") }] });
  modelId = (await t.engine.createInstance({ modelType: "composite.Model", wait: true })).action!.modelId;
});
afterAll(() => t?.close());

describe("list and map arguments", () => {
  it("a map of tensors and JSON and a list of byte blobs go to the plugin and come back as they were", async () => {
    const client = createPlinthClient(`127.0.0.1:${t.port}`);
    try {
      const x = new Tensor("float64", [2, 2], new Float64Array([1, 2, 3, 4]));
      const sent = { x, label: "batch-1", blobs: [new Uint8Array([1, 2]), new Uint8Array([3])], nested: { ids: [1, 2], t: x } };
      const back = (await client.predict(modelId, { args: [sent] }).done).prediction as unknown as typeof sent;
      expect(back.label).toBe("batch-1");
      expect(back.x).toBeInstanceOf(Tensor);
      expect(back.x.dtype).toBe("float64");
      expect([...back.x.data]).toEqual([1, 2, 3, 4]);
      expect(back.blobs.map((b) => [...b])).toEqual([[1, 2], [3]]);
      expect(back.nested.ids).toEqual([1, 2]);
      expect([...back.nested.t.shape]).toEqual([2, 2]);
    } finally {
      client.close();
    }
  });

  it("a data-access function's {x, y} of tensors is what fit's map schema takes", async () => {
    const fit = (await t.engine.fit({ modelId, args: [dataAccess("composite.xy", [json(5)])], wait: true })).action!;
    expect(fit.error?.message ?? "").toBe("");
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    const predicted = (await t.engine.predict({ modelId, wait: true })).action!;
    expect(jsonOf(predicted.result!.prediction)).toEqual([5, 2, 5, 5]);
    // The server checks what JSON it can inside a map: meta.n must be an integer ≥ 1.
    await expectStatus(
      t.engine.fit({ modelId, args: [{ kind: { case: "map", value: { entries: { x: json(1), y: json(2), meta: json({ n: 0 }) } } } }] }),
      Status.INVALID_ARGUMENT,
      /^args\[0\]\.meta\.n: must be an integer ≥ 1, got 0$/,
    );
  });

  it("round-trips through proto3 JSON, as grpcurl and curl send it", async () => {
    const body = {
      modelId,
      args: [
        {
          list: {
            items: [
              { bytes: "AAE=" },
              { json: { a: 1 } },
              { map: { entries: { t: { tensor: { dtype: "D_TYPE_INT8", shape: [2], data: "BQY=" } } } } },
            ],
          },
        },
      ],
      wait: true,
    };
    fromJson(PredictRequestSchema, body); // what grpcurl would encode
    const response = await fetch(`http://127.0.0.1:${t.server.httpPort}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = toJson(PredictResponseSchema, fromJson(PredictResponseSchema, (await response.json()) as JsonValue)) as {
      action: { result: { prediction: unknown } };
    };
    expect(answer.action.result.prediction).toEqual({
      list: {
        items: [{ bytes: "AAE=" }, { json: { a: 1 } }, { map: { entries: { t: { tensor: { dtype: "D_TYPE_INT8", shape: [2], data: "BQY=" } } } } }],
      },
    });
  });

  it("a large list shows as a summary with its count, and in full where asked", async () => {
    const action = (await t.engine.predict({ modelId, args: [dataAccess("composite.blobs", [json(200)])], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.SUCCEEDED);
    const basic = (await t.actions.getAction({ actionId: action.id, view: ActionView.BASIC })).action!;
    expect(basic.result!.prediction!.kind).toMatchObject({ case: "summary", value: { kind: ArgKind.LIST, items: 200, sizeBytes: 40_000n } });
    const full = (await t.actions.getAction({ actionId: action.id })).action!;
    const items = full.result!.prediction!.kind.case === "list" ? full.result!.prediction!.kind.value.items : [];
    expect(items).toHaveLength(200);
    const seventh = items[7]!.kind;
    expect(seventh.case === "bytes" && [...seventh.value]).toEqual(Array(200).fill(7));
  });

  it("refuses data access inside a list, and a list or map item that sets nothing, naming where", async () => {
    await expectStatus(
      t.engine.predict({ modelId, args: [{ kind: { case: "list", value: { items: [json(1), dataAccess("composite.xy", [json(1)])] } } }] }),
      Status.INVALID_ARGUMENT,
      /^argument args\[0\]\[1\]: data_access cannot be inside a list or map; pass it as an argument of its own$/,
    );
    await expectStatus(
      t.engine.predict({ modelId, kwargs: { m: { kind: { case: "map", value: { entries: { a: {} } } } } } }),
      Status.INVALID_ARGUMENT,
      /^argument kwargs\.m\.a: set one of json, json_text, bytes, tensor, list or map$/,
    );
  });

  it("sends a client's data-access reference inside an array as a list, which the server refuses by name", async () => {
    const client = createPlinthClient(`127.0.0.1:${t.port}`);
    try {
      await expect(client.predict(modelId, { args: [[ref("composite.xy", [1])]] }).done).rejects.toThrow(
        /args\[0\]\[0\]: data_access cannot be inside a list/,
      );
    } finally {
      client.close();
    }
  });
});
