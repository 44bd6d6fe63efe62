/**
 * A tensor argument checked by the server, as a plugin declares it with isTensor: the
 * schema the SDK publishes (zod and valibot) and the check the server makes with it.
 */
import { toStandardJsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { DType } from "../../gen/plinth/v1/arg_pb.ts";
import { isTensor } from "../../sdk/mod.ts";
import { jsonSchemaText } from "../../sdk/schema.ts";
import { compileCall, OPAQUE, problems, TensorInstance } from "../../server/engine/arg-schemas.ts";

const images = z.custom(isTensor("float32", [-1, 784]));
const published = (schema: Parameters<typeof jsonSchemaText>[0]) => JSON.parse(jsonSchemaText(schema, "args")) as Record<string, unknown>;
const checkOf = (schema: Parameters<typeof jsonSchemaText>[0]) => compileCall({ call: "predict", args: published(schema) as never }, "mnist.MLP");

describe("a tensor argument", () => {
  it("is published with its dtype and shape, from zod and from valibot", () => {
    const spec = { "x-plinth-tensor": { dtype: "float32", shape: [-1, 784] } };
    expect(published(z.tuple([images]))).toMatchObject({ prefixItems: [spec] });
    expect(published(z.tuple([z.object({ labels: z.custom(isTensor("int32")) })]))).toMatchObject({
      prefixItems: [{ properties: { labels: { "x-plinth-tensor": { dtype: "int32" } } } }],
    });
    expect(published(toStandardJsonSchema(v.tuple([v.custom(isTensor("float32", [-1, 784]))])))).toMatchObject({ prefixItems: [spec] });
  });

  it("of the wrong dtype or shape, or JSON in its place, is refused naming what it must be; the right one passes", () => {
    const check = checkOf(z.tuple([images]));
    const tensor = (dtype: DType, shape: number[]) => new TensorInstance(dtype, shape);
    expect(problems(check, [tensor(DType.FLOAT32, [3, 784])], {})).toEqual([]);
    expect(problems(check, [tensor(DType.FLOAT32, [3, 700])], {})).toEqual([
      "args[0]: must be a float32 tensor of shape [n, 784], got a float32 tensor of shape [3, 700]",
    ]);
    expect(problems(check, [tensor(DType.INT64, [3, 784])], {})).toEqual([
      "args[0]: must be a float32 tensor of shape [n, 784], got an int64 tensor of shape [3, 784]",
    ]);
    expect(problems(check, [tensor(DType.FLOAT32, [784])], {})).toEqual([
      "args[0]: must be a float32 tensor of shape [n, 784], got a float32 tensor of shape [784]",
    ]);
    expect(problems(check, [[1, 2]], {})).toEqual(["args[0]: must be a float32 tensor of shape [n, 784], got [1,2]"]);
    // Bytes, data access still to run and JSON too large to parse are left to the child.
    expect(problems(check, [OPAQUE], {})).toEqual([]);
  });

  it("in a union with JSON rows: either passes, a wrong tensor is refused by what the tensor must be", () => {
    const check = checkOf(z.tuple([z.union([images, z.array(z.array(z.number()).length(784))])]));
    expect(problems(check, [new TensorInstance(DType.FLOAT32, [1, 784])], {})).toEqual([]);
    expect(problems(check, [[Array(784).fill(0)]], {})).toEqual([]);
    expect(problems(check, [new TensorInstance(DType.FLOAT64, [1, 784])], {})).toEqual([
      "args[0]: must be a float32 tensor of shape [n, 784], got a float64 tensor of shape [1, 784]",
    ]);
  });
});
