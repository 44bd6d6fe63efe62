/**
 * The form that runs create, fit or predict, its fields made from what the call declares
 * (its JSON Schemas): a field per positional and keyword argument, typed (number, text,
 * choice, yes/no, else JSON), with the schema's description and default; any argument may
 * come from a data-access function instead, with arguments of its own (JSON). The
 * server's refusal of an argument shows beside its field.
 */
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { useState } from "preact/hooks";
import { type Arg, ArgSchema } from "../../gen/plinth/v1/arg_pb.ts";
import type { Plugin } from "../../gen/plinth/v1/engine_service_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { engine, errorText } from "./api.ts";

interface JsonSchema {
  type?: string | string[];
  enum?: JsonValue[];
  description?: string;
  default?: JsonValue;
  prefixItems?: JsonSchema[];
  items?: JsonSchema | false;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  minItems?: number;
}

/** One argument as the form holds it: a value typed in, or a data-access function with its kwargs. */
interface Field {
  source: "value" | string;
  text: string;
  kwargs: string;
}

type Call = "create" | "fit" | "predict";
const CALL_SCHEMA: Record<Call, string> = { create: "instantiate", fit: "fit", predict: "predict" };

const fieldOf = (schema: JsonSchema | undefined): Field => ({
  source: "value",
  text: schema?.default === undefined ? "" : typeof schema.default === "string" ? schema.default : JSON.stringify(schema.default),
  kwargs: "{}",
});

const kindOf = (schema: JsonSchema | undefined): string => {
  if (!schema) return "json";
  if (schema.enum) return "enum";
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  return type === "number" || type === "integer" ? "number" : type === "string" ? "string" : type === "boolean" ? "boolean" : "json";
};

/** What a field sends: JSON parsed by its kind, or a data-access reference. */
function argOf(field: Field, schema: JsonSchema | undefined, path: string): Arg {
  if (field.source !== "value") {
    let kwargs: Record<string, JsonValue>;
    try {
      kwargs = JSON.parse(field.kwargs || "{}");
    } catch (e) {
      throw new FieldError(path, `its data-access arguments are not JSON: ${(e as Error).message}`);
    }
    const value = { name: field.source, kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, jsonArg(v)])) };
    return create(ArgSchema, { kind: { case: "dataAccess", value } });
  }
  const kind = kindOf(schema);
  if (kind === "string" || kind === "enum") {
    if (kind === "enum" && !schema!.enum!.every((v) => typeof v === "string")) return jsonArg(JSON.parse(field.text));
    return jsonArg(field.text);
  }
  if (kind === "boolean") return jsonArg(field.text === "true");
  try {
    return jsonArg(JSON.parse(field.text));
  } catch (e) {
    throw new FieldError(path, `not JSON: ${(e as Error).message}`);
  }
}

const jsonArg = (value: JsonValue): Arg => create(ArgSchema, { kind: { case: "json", value: fromJson(ValueSchema, value) } });

class FieldError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** The field a server's message names first: `args[0]…`, `kwargs.scale…`. */
function pathOf(message: string): string | undefined {
  return /(?:^|: )((?:args\[\d+\])|(?:kwargs\.[\w.-]+?))(?=[:.[ ]|$)/.exec(message)?.[1];
}

export function RunForm({ plugins, models }: { plugins: Plugin[]; models: Map<string, Model> }) {
  const [call, setCall] = useState<Call>("create");
  const [target, setTarget] = useState("");
  const [args, setArgs] = useState<Field[]>([]);
  const [kwargs, setKwargs] = useState<Record<string, Field>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState("");
  const modelType = call === "create" ? target : models.get(target)?.modelType;
  const declared = plugins.flatMap((p) => p.modelTypes).find((m) => m.name === modelType);
  const schemas = declared?.schemas.find((c) => c.call === CALL_SCHEMA[call]);
  const argsSchema = schemas?.args as JsonSchema | undefined;
  const kwargsSchema = schemas?.kwargs as JsonSchema | undefined;
  const positional = argsSchema?.prefixItems;
  const dataAccess = plugins.flatMap((p) => p.dataAccess.map((d) => d.name));
  // The positional fields: as the schema lists them, else as many as added.
  const shownArgs = positional ? positional.map((s, i) => args[i] ?? fieldOf(s)) : args;
  const properties = Object.entries(kwargsSchema?.properties ?? {});

  const choose = (nextCall: Call, nextTarget: string) => {
    setCall(nextCall);
    setTarget(nextTarget);
    setArgs([]);
    setKwargs({});
    setErrors({});
  };
  const run = async (event: Event) => {
    event.preventDefault();
    setErrors({});
    setError("");
    try {
      const a = shownArgs.map((f, i) => argOf(f, positional?.[i] ?? (argsSchema?.items || undefined), `args[${i}]`));
      const k: Record<string, Arg> = {};
      for (const [name, schema] of properties) {
        const f = kwargs[name];
        // Left empty: the schema's default applies (the server fills it in).
        if (!f || (f.source === "value" && f.text === "")) continue;
        k[name] = argOf(f, schema, `kwargs.${name}`);
      }
      const request = { args: a, kwargs: k };
      const started =
        call === "create"
          ? await engine.createInstance({ modelType: target, ...request })
          : call === "fit"
            ? await engine.fit({ modelId: target, ...request })
            : await engine.predict({ modelId: target, ...request });
      location.hash = `#/actions/${started.action!.id}`;
    } catch (e) {
      const message = e instanceof FieldError ? e.message : errorText(e);
      const path = e instanceof FieldError ? e.path : pathOf(message);
      if (path && (path.startsWith("args[") ? Number(/\d+/.exec(path)![0]) < shownArgs.length : properties.some(([n]) => path === `kwargs.${n}`)))
        setErrors({ [path]: message });
      else setError(message);
    }
  };

  const fieldInput = (field: Field, schema: JsonSchema | undefined, path: string, set: (f: Field) => void) => {
    const kind = kindOf(schema);
    return (
      <div class="field" data-field={path}>
        <select
          aria-label={`${path}: a value or a data-access function`}
          value={field.source}
          onChange={(e) => set({ ...field, source: (e.target as HTMLSelectElement).value })}
        >
          <option value="value">value</option>
          {dataAccess.map((d) => (
            <option key={d} value={d}>
              @{d}
            </option>
          ))}
        </select>
        {field.source !== "value" ? (
          <input
            aria-label={`${path}: the data-access function's kwargs (JSON)`}
            value={field.kwargs}
            onInput={(e) => set({ ...field, kwargs: (e.target as HTMLInputElement).value })}
          />
        ) : kind === "enum" ? (
          <select aria-label={path} value={field.text} onChange={(e) => set({ ...field, text: (e.target as HTMLSelectElement).value })}>
            <option value="" />
            {schema!.enum!.map((v) => (
              <option key={String(v)} value={typeof v === "string" ? v : JSON.stringify(v)}>
                {String(v)}
              </option>
            ))}
          </select>
        ) : kind === "boolean" ? (
          <input
            aria-label={path}
            type="checkbox"
            checked={field.text === "true"}
            onChange={(e) => set({ ...field, text: String((e.target as HTMLInputElement).checked) })}
          />
        ) : (
          <input
            aria-label={path}
            type={kind === "number" ? "number" : "text"}
            step="any"
            placeholder={kind === "json" ? "JSON" : ""}
            value={field.text}
            onInput={(e) => set({ ...field, text: (e.target as HTMLInputElement).value })}
          />
        )}
        {schema?.description && <small class="muted"> {schema.description}</small>}
        {errors[path] && (
          <p class="error" data-testid={`error-${path}`}>
            {errors[path]}
          </p>
        )}
      </div>
    );
  };

  const modelTypes = plugins.flatMap((p) => p.modelTypes.map((m) => m.name));
  return (
    <form data-testid="run" onSubmit={run} class="run">
      <select name="call" value={call} onChange={(e) => choose((e.target as HTMLSelectElement).value as Call, "")}>
        <option value="create">create (model type)</option>
        <option value="fit">fit (model id)</option>
        <option value="predict">predict (model id)</option>
      </select>
      <input
        name="target"
        list={call === "create" ? "run-types" : "run-models"}
        placeholder={call === "create" ? "a model type" : "a model's id (m-…)"}
        value={target}
        onChange={(e) => choose(call, (e.target as HTMLInputElement).value.trim())}
      />
      <datalist id="run-types">
        {modelTypes.map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
      <datalist id="run-models">
        {[...models.values()].map((m) => (
          <option key={m.id} value={m.id}>
            {m.modelType}
          </option>
        ))}
      </datalist>
      {modelType && (
        <fieldset>
          <legend>
            {call} {modelType}
            {!schemas && <span class="muted"> (no schema declared: arguments as JSON)</span>}
          </legend>
          {shownArgs.map((f, i) =>
            fieldInput(f, positional?.[i] ?? (argsSchema?.items || undefined), `args[${i}]`, (next) => {
              const copy = [...shownArgs];
              copy[i] = next;
              setArgs(copy);
            }),
          )}
          {!positional && (
            <button type="button" data-testid="add-arg" onClick={() => setArgs([...shownArgs, fieldOf(undefined)])}>
              + positional argument
            </button>
          )}
          {properties.map(([name, schema]) => (
            <div key={name} class="kwarg">
              <span class="name">
                {name}
                {kwargsSchema?.required?.includes(name) ? " *" : ""}
              </span>
              {fieldInput(kwargs[name] ?? fieldOf(schema), schema, `kwargs.${name}`, (next) => setKwargs({ ...kwargs, [name]: next }))}
            </div>
          ))}
        </fieldset>
      )}
      <button type="submit">Run</button>
      {error && (
        <p class="error" data-testid="run-error">
          {error}
        </p>
      )}
    </form>
  );
}
