/**
 * The argument schemas plugins declare (JSON Schema 2020-12, from their manifest),
 * compiled once with ajv when the plugin loads, and the checks made with them: a
 * request's arguments before anything runs, and data-access results before the call
 * that consumes them.
 *
 * JSON arguments are checked by the server, and tensors by their dtype and shape where
 * the schema says (`x-plinth-tensor`, which the SDK publishes for `isTensor`): bytes,
 * tensors and arguments whose data access has not run yet stand in as opaque values,
 * and whatever else the schema says of them (or below them) is left to the plugin's own
 * validator.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { DType } from "../../gen/plinth/v1/arg_pb.ts";
import { cut } from "../errors.ts";

/** A value the server does not check: bytes, a tensor, data access still to run. */
export class Opaque {}
export const OPAQUE = Object.freeze(new Opaque());

/** A tensor as the checks see it: opaque but for its dtype and shape. */
export class TensorInstance extends Opaque {
  /** `dtype` as NumPy names it ("float32"). */
  readonly dtype: string;
  constructor(
    dtype: DType,
    readonly shape: readonly number[],
  ) {
    super();
    this.dtype = (DType[dtype] ?? "unspecified").toLowerCase();
  }
}

/** What a tensor argument must be, as the SDK publishes it for `isTensor(dtype, shape)`. */
const TENSOR_KEYWORD = "x-plinth-tensor";
interface TensorSpec {
  dtype?: string;
  /** -1: any size. */
  shape?: number[];
}

export type Instance = unknown;

const ajv = new Ajv2020({
  allErrors: true, // all of them: errors at opaque values are dropped, the rest reported
  verbose: true, // each error's schema and data, for messages that say what was expected
  strict: false, // plugins may carry annotations of their own (x-ui, examples)
  validateFormats: false, // no format vocabulary loaded; a format is a description here
});
ajv.addKeyword({
  keyword: TENSOR_KEYWORD,
  schemaType: "object",
  // Data access still to run, bytes and JSON too large to parse pass: the child checks them.
  validate: (spec: TensorSpec, data: Instance) => (data instanceof TensorInstance ? tensorMatches(spec, data) : data instanceof Opaque),
});

function tensorMatches(spec: TensorSpec, t: TensorInstance): boolean {
  if (spec.dtype !== undefined && spec.dtype !== t.dtype) return false;
  const shape = spec.shape;
  return !Array.isArray(shape) || (shape.length === t.shape.length && shape.every((size, i) => size === -1 || size === t.shape[i]));
}

/** "a float32 tensor of shape [n, 784]" */
function tensorWords(spec: TensorSpec): string {
  const shape = Array.isArray(spec.shape) ? ` of shape [${spec.shape.map((size) => (size === -1 ? "n" : size)).join(", ")}]` : "";
  const kind = spec.dtype ? `${spec.dtype} tensor` : "tensor";
  return `${/^[aeiou]/.test(kind) ? "an" : "a"} ${kind}${shape}`;
}

/** What a value is, for a message: "a float64 tensor of shape [2, 700]", or its JSON. */
function gotWords(value: Instance): string {
  if (value instanceof TensorInstance) return tensorWords({ dtype: value.dtype, shape: [...value.shape] });
  return cut(JSON.stringify(value) ?? String(value));
}

/** A call's compiled schemas. */
export interface CallCheck {
  /** The function, as messages name it: "fit on mean.Model", "mean.range". */
  label: string;
  args?: ValidateFunction;
  kwargs?: ValidateFunction;
}

/**
 * Compiles the schemas of `name`'s call (`instantiate`, `fit`, `predict`, `data_access`);
 * a schema that does not compile throws with ajv's reason.
 */
export function compileCall(schemas: { call: string; args?: JsonObject | undefined; kwargs?: JsonObject | undefined }, name: string): CallCheck {
  const what = `${name}'s ${schemas.call}`;
  const compile = (schema: JsonObject | undefined, part: string) => {
    if (!schema) return undefined;
    // The manifest's schemas are 2020-12; a `$schema` naming another draft is ignored rather than fetched.
    const { $schema: _, ...rest } = schema;
    try {
      return ajv.compile(rest);
    } catch (error) {
      throw new Error(`${what} ${part} schema does not compile: ${(error as Error).message}`);
    }
  };
  const check: CallCheck = { label: schemas.call === "data_access" ? name : `${schemas.call} on ${name}` };
  const args = compile(schemas.args, "args");
  const kwargs = compile(schemas.kwargs, "kwargs");
  if (args) check.args = args;
  if (kwargs) check.kwargs = kwargs;
  return check;
}

/**
 * The problems of a call's arguments, each as `kwargs.iterations: must be an integer
 * ≥ 1, got "ten"`, at most `max` of them; `prefix` places nested data access
 * ("args[0]." → "args[0].kwargs.x").
 */
export function problems(check: CallCheck, args: Instance[], kwargs: Record<string, Instance>, prefix = "", max = 3): string[] {
  const out: string[] = [];
  const run = (validate: ValidateFunction | undefined, value: Instance, root: "args" | "kwargs") => {
    if (!validate || validate(value)) return;
    for (const error of validate.errors ?? []) {
      const issue = describe(error, value, `${prefix}${root}`, check.label);
      if (issue && !out.includes(issue)) out.push(issue);
    }
  };
  run(check.args, args, "args");
  run(check.kwargs, kwargs, "kwargs");
  return out.slice(0, max);
}

/** One ajv error as a message, or undefined when it is about an opaque value or below one. */
function describe(error: ErrorObject, root: Instance, rootName: string, fn: string): string | undefined {
  const segments = error.instancePath
    .split("/")
    .slice(1)
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  let value: Instance = root;
  let path = rootName;
  for (const s of segments) {
    if (value instanceof Opaque) return undefined;
    path += Array.isArray(value) ? `[${s}]` : `.${s}`;
    value = (value as Record<string, Instance>)[s];
  }
  if (value instanceof Opaque && error.keyword !== TENSOR_KEYWORD) return undefined;
  const parentSchema = (error.parentSchema ?? {}) as Record<string, unknown>;
  const p = error.params as Record<string, unknown>;
  let message: string;
  let got = true;
  switch (error.keyword) {
    case "type":
      message = `must be ${expected(parentSchema)}`;
      break;
    case "minimum":
    case "maximum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
      message = `must be ${expected(parentSchema)}`;
      break;
    case "required":
      path += `.${String(p.missingProperty)}`;
      message = "is required";
      got = false;
      break;
    case "additionalProperties": {
      const known = Object.keys((parentSchema.properties ?? {}) as object);
      const takes = `it takes ${known.length ? known.join(", ") : "none"}`;
      message = rootName.endsWith("kwargs") && !segments.length ? `not a keyword argument of ${fn}; ${takes}` : `not a key of ${path}; ${takes}`;
      path += `.${String(p.additionalProperty)}`;
      got = false;
      break;
    }
    case "enum":
      message = `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
      break;
    case "const":
      message = `must be ${JSON.stringify(p.allowedValue)}`;
      break;
    case "minItems":
      message = `must have at least ${String(p.limit)} item${p.limit === 1 ? "" : "s"}`;
      got = false;
      break;
    case "maxItems":
    case "items":
      message = `must have at most ${String(p.limit)} item${p.limit === 1 ? "" : "s"}`;
      got = false;
      break;
    case "minLength":
      message = `must be at least ${String(p.limit)} character${p.limit === 1 ? "" : "s"} long`;
      break;
    case "maxLength":
      message = `must be at most ${String(p.limit)} character${p.limit === 1 ? "" : "s"} long`;
      break;
    case "pattern":
      message = `must match ${String(p.pattern)}`;
      break;
    case TENSOR_KEYWORD:
      message = `must be ${tensorWords(error.schema as TensorSpec)}`;
      break;
    default:
      message = error.message ?? `fails ${error.keyword}`;
  }
  if (!got || value === undefined) return `${path}: ${message}`;
  return `${path}: ${message}, got ${gotWords(value)}`;
}

const nouns: Record<string, string> = {
  integer: "an integer",
  number: "a number",
  string: "a string",
  boolean: "a boolean",
  array: "an array",
  object: "an object",
  null: "null",
};

/** What a schema asks for, in words: "an integer ≥ 1", "a number from 0 to 1", "a string". */
function expected(schema: Record<string, unknown>): string {
  const types = [schema.type ?? []].flat() as string[];
  const noun = types.length ? types.map((t) => nouns[t] ?? t).join(" or ") : "a value";
  // zod writes ±MAX_SAFE_INTEGER for an integer without bounds: no bound worth saying.
  const bound = (key: string) => {
    const v = schema[key];
    return typeof v === "number" && Math.abs(v) < Number.MAX_SAFE_INTEGER ? v : undefined;
  };
  const [min, max, xmin, xmax] = [bound("minimum"), bound("maximum"), bound("exclusiveMinimum"), bound("exclusiveMaximum")];
  if (min !== undefined && max !== undefined) return `${noun} from ${min} to ${max}`;
  const lower = min !== undefined ? `≥ ${min}` : xmin !== undefined ? `> ${xmin}` : undefined;
  const upper = max !== undefined ? `≤ ${max}` : xmax !== undefined ? `< ${xmax}` : undefined;
  return [noun, [lower, upper].filter(Boolean).join(" and ")].filter(Boolean).join(" ");
}
