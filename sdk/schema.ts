/**
 * Schemas of a function's arguments and reports: any Standard Schema validator (zod 4,
 * valibot, arktype: https://standardschema.dev) or a plain JSON Schema object. The SDK
 * depends on none of them: it uses the Standard Schema interface, whose shape is below,
 * and, to publish a schema, its Standard JSON Schema converter.
 * @module
 */
import { PluginError } from "./errors.ts";
import { tensorSpecOf } from "./values.ts";

/** The Standard Schema interface, as much of it as the SDK uses. */
export interface StandardSchema<Input = unknown, Output = Input> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
    /** Standard JSON Schema: how the schema turns into JSON Schema (zod 4.2+, arktype, valibot's adapter). */
    readonly jsonSchema?:
      | { readonly input: (options: { readonly target: string; readonly libraryOptions?: Record<string, unknown> }) => Record<string, unknown> }
      | undefined;
  };
}

type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
      readonly issues: ReadonlyArray<{
        readonly message: string;
        readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
      }>;
    };

/** A JSON Schema (draft 2020-12) as a plain object, e.g. `{ type: "array", prefixItems: [{ type: "number" }] }`. */
export type JsonSchema = { readonly [keyword: string]: unknown };

/** What `args`, `kwargs` and `state` take: a Standard Schema validator or a JSON Schema. */
export type Schema<T = unknown> = StandardSchema<unknown, T> | JsonSchema;

/** The type a schema's values have once validated: its output type, or `Fallback` for a plain JSON Schema. */
export type Infer<S, Fallback> = S extends StandardSchema<unknown, infer Output> ? Output : Fallback;

export function isStandardSchema(schema: unknown): schema is StandardSchema {
  return typeof schema === "object" && schema !== null && "~standard" in schema;
}

/** The JSON Schema keyword that says what a tensor argument must be; the server checks it. */
export const TENSOR_KEYWORD = "x-plinth-tensor";

/**
 * valibot's converter writes the same JSON Schema for `object` (which drops keys it does
 * not declare) and `looseObject` (which keeps them): a loose one says it takes any. A
 * `v.custom(isTensor(dtype, shape))` is published with what the tensor must be.
 */
function overrideSchema(context: { valibotSchema: { type?: unknown; check?: unknown }; jsonSchema: Record<string, unknown> }) {
  if (context.valibotSchema.type === "loose_object") return { ...context.jsonSchema, additionalProperties: {} };
  const spec = tensorSpecOf(context.valibotSchema.check);
  return spec ? { ...context.jsonSchema, [TENSOR_KEYWORD]: spec } : undefined;
}

/** zod: a `z.custom(isTensor(dtype, shape))` is published with what the tensor must be. */
function override(context: { zodSchema: { _zod?: { def?: { fn?: unknown } } }; jsonSchema: Record<string, unknown> }) {
  const spec = tensorSpecOf(context.zodSchema._zod?.def?.fn);
  if (spec) context.jsonSchema[TENSOR_KEYWORD] = spec;
}

/** The schema as JSON Schema, or undefined when it cannot say (a validator without a converter). */
function jsonSchemaOf(schema: Schema): Record<string, unknown> | undefined {
  if (!isStandardSchema(schema)) return schema as Record<string, unknown>;
  try {
    // What JSON Schema cannot say (a Tensor, a Uint8Array) becomes `{}`, "any value"
    // (zod: unrepresentable, valibot: errorMode), instead of no schema at all.
    const libraryOptions = { unrepresentable: "any", errorMode: "ignore", overrideSchema, override };
    return schema["~standard"].jsonSchema?.input({ target: "draft-2020-12", libraryOptions });
  } catch {
    return undefined;
  }
}

/**
 * A kwargs schema that names its keywords takes no others unless it says so
 * (additionalProperties, patternProperties, …): zod's and valibot's `object` drop an
 * unknown key, so a misspelt keyword would run with the defaults. `looseObject`,
 * `passthrough` and `catchall` say so; so does `additionalProperties` in a JSON Schema.
 */
function closeKeywords(json: Record<string, unknown>): Record<string, unknown> {
  const open = ["additionalProperties", "patternProperties", "unevaluatedProperties", "propertyNames"].some((k) => k in json);
  const named = json.type === "object" && typeof json.properties === "object" && json.properties !== null;
  return named && !open ? { ...json, additionalProperties: false } : json;
}

/** A declared schema as the JSON Schema the server checks with and ListPlugins shows. */
function published(schema: Schema, part: "args" | "kwargs" | "state"): Record<string, unknown> | undefined {
  const json = jsonSchemaOf(schema);
  return json && part === "kwargs" ? closeKeywords(json) : json;
}

/** The schema as JSON Schema text, or "" when there is none or it cannot say (a validator without a converter). @internal */
export function jsonSchemaText(schema: Schema | undefined, part: "args" | "kwargs" | "state"): string {
  const json = schema === undefined ? undefined : published(schema, part);
  return json ? JSON.stringify(json) : "";
}

const keywordLists = new WeakMap<object, readonly string[] | null>();

/** The keywords a kwargs schema takes, or null when it takes any. */
function keywordsOf(schema: Schema): readonly string[] | null {
  let keywords = keywordLists.get(schema);
  if (keywords === undefined) {
    const json = published(schema, "kwargs");
    keywords = json?.additionalProperties === false ? Object.keys(json.properties ?? {}) : null;
    keywordLists.set(schema, keywords);
  }
  return keywords;
}

/**
 * Refuses a keyword the schema does not take, as the server does before the call: a
 * PluginError `invalid_argument` naming it and the ones `fn` takes. @internal
 */
export function checkKeywords(schema: Schema | undefined, kwargs: object, fn: string): void {
  if (schema === undefined) return;
  const keywords = keywordsOf(schema);
  if (keywords === null) return;
  const issues = Object.keys(kwargs)
    .filter((k) => !keywords.includes(k))
    .map((k) => `kwargs.${k}: not a keyword argument of ${fn}; it takes ${keywords.length ? keywords.join(", ") : "none"}`);
  if (issues.length) throw new PluginError("invalid_argument", issues.join("; "), { issues });
}

/**
 * Checks `value` against a Standard Schema and gives its output (defaults applied);
 * a plain JSON Schema passes the value as it is (the server has checked it). An invalid
 * value is a PluginError `invalid_argument` naming the path. @internal
 */
export async function validated(schema: Schema | undefined, value: unknown, what: "args" | "kwargs"): Promise<unknown> {
  if (!isStandardSchema(schema)) return value;
  const result = await schema["~standard"].validate(value);
  if (!result.issues) return result.value;
  const issues = result.issues.map((issue) => {
    const path = (issue.path ?? []).map((p) => (typeof p === "object" ? p.key : p));
    const at = path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
    return `${what}${at}: ${issue.message}`;
  });
  throw new PluginError("invalid_argument", issues.join("; "), { issues });
}
