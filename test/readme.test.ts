/**
 * The README's grpcurl examples, run as written: their JSON bodies parsed with the
 * proto3 JSON mapping (as grpcurl does) and sent to a real server.
 */
import { readFileSync } from "node:fs";
import { fromJsonString, toJson } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import {
  CreateInstanceRequestSchema,
  CreateInstanceResponseSchema,
  FitRequestSchema,
  PredictRequestSchema,
  PredictResponseSchema,
} from "../gen/plinth/v1/engine_service_pb.ts";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";

const readme = readFileSync(`${root}README.md`, "utf8");

/** The -d body of the README's grpcurl call to `method`, the first one or the nth. */
function body(method: string, nth = 0): string {
  const matches = [...readme.matchAll(new RegExp(`-d '([^']*)'[^']*?plinth\\.v1\\.${method}\\b`, "g"))];
  if (!matches[nth]) throw new Error(`no grpcurl example ${nth} for ${method} in the README`);
  return matches[nth][1]!;
}

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

describe("the README's grpcurl session", () => {
  it("gets a prediction from the Iris model with the README's JSON bodies", async () => {
    const created = await t.engine.createInstance(fromJsonString(CreateInstanceRequestSchema, body("EngineService/CreateInstance")));
    const createdJson = toJson(CreateInstanceResponseSchema, created) as {
      action: { modelId: string; status: string };
    };
    expect(createdJson.action.status).toBe("ACTION_STATUS_SUCCEEDED");
    const modelId = createdJson.action.modelId;
    const exampleId = /"model_id": "([^"]+)"/.exec(readme)![1]!;

    const fit = await t.engine.fit(fromJsonString(FitRequestSchema, body("EngineService/Fit").replaceAll(exampleId, modelId)));
    expect(fit.action!.status).toBe(ActionStatus.SUCCEEDED);

    const predicted = await t.engine.predict(fromJsonString(PredictRequestSchema, body("EngineService/Predict").replaceAll(exampleId, modelId)));
    const json = toJson(PredictResponseSchema, predicted) as {
      action: { result: { prediction: unknown } };
    };
    // The README shows this result.
    expect(json.action.result).toEqual({ prediction: { json: ["setosa", "virginica"] } });
    expect(readme).toContain('"result": { "prediction": { "json": ["setosa", "virginica"] } }');

    // The same flowers as json_text: the prediction comes back as text.
    const asText = await t.engine.predict(fromJsonString(PredictRequestSchema, body("EngineService/Predict", 1).replaceAll(exampleId, modelId)));
    const textJson = toJson(PredictResponseSchema, asText) as { action: { result: unknown } };
    expect(textJson.action.result).toEqual({ prediction: { jsonText: '["setosa","virginica"]' } });
    expect(readme).toContain('"result": { "prediction": { "jsonText": "[\\"setosa\\",\\"virginica\\"]" } }');
  });

  it("sends a map of a tensor and JSON as the Arguments section shows, and the system-test model echoes it", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const n = [...readme.matchAll(/-d '([^']*)'[^']*?plinth\.v1\.EngineService\/Predict\b/g)].findIndex((m) => m[1]!.includes('"map"'));
    const text = body("EngineService/Predict", n);
    const exampleId = /"model_id": "([^"]+)"/.exec(text)![1]!;
    const predicted = await t.engine.predict(fromJsonString(PredictRequestSchema, text.replaceAll(exampleId, modelId)));
    const json = toJson(PredictResponseSchema, predicted) as { action: { result: { prediction: { json: { args: unknown[] } } } } };
    expect(json.action.result.prediction.json.args).toEqual([{ x: { tensor: { dtype: "float32", shape: [1, 4] } }, ids: [17] }]);
    expect(readme).toContain('"prediction": {"json": {"args": [{"x": {"tensor": {"dtype": "float32", "shape": [1, 4]}}, "ids": [17]}]');
  });
});
