/**
 * Schemas of a function's arguments and reports: any Standard Schema validator (zod 4,
 * valibot, arktype: https://standardschema.dev) or a plain JSON Schema object. The SDK
 * depends on none of them: it uses the Standard Schema interface, whose shape is below,
 * and, to publish a schema, its Standard JSON Schema converter.
 * @module
 */
import { PluginError } from "./errors.ts";

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

/** The schema as JSON Schema text, or "" when there is none or it cannot say (a validator without a converter). @internal */
export function jsonSchemaText(schema: Schema | undefined): string {
  if (schema === undefined) return "";
  if (!isStandardSchema(schema)) return JSON.stringify(schema);
  try {
    // What JSON Schema cannot say (a Tensor, a Uint8Array) becomes `{}`, "any value"
    // (zod: unrepresentable, valibot: errorMode), instead of no schema at all.
    const libraryOptions = { unrepresentable: "any", errorMode: "ignore" };
    const converted = schema["~standard"].jsonSchema?.input({ target: "draft-2020-12", libraryOptions });
    return converted ? JSON.stringify(converted) : "";
  } catch {
    return "";
  }
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
