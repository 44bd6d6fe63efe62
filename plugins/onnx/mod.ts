/**
 * Serves ONNX models (exported from PyTorch, scikit-learn, TensorFlow…) with ONNX Runtime's
 * CPU build. Node only: onnxruntime-node is a native addon, which Plinth's Deno children
 * may not load (no --allow-ffi), and which a Node plugin with `permissions` loads only
 * with `permissions.addons: true`.
 * @module
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { z } from "zod";
import { type BatchItem, type DType, defineModel, definePlugin, PluginError, type PluginValue, Tensor, type TensorData } from "../../sdk/mod.ts";

/**
 * A dimension as the model declares it: a size, a symbolic name such as "N" (any size),
 * or -1 for a dimension the model leaves free without naming it.
 */
type Dim = number | string;

/** An input or output of the model, as its state shows it. */
export interface Port {
  name: string;
  /** ORT's element type: a Plinth dtype, or one Plinth tensors do not carry ("float16", "string"…). */
  dtype: string;
  /** Empty when the model does not say. */
  shape: Dim[];
  /** Not a tensor (a sequence or a map, as scikit-learn's ZipMap gives): no dtype, no shape. */
  tensor: boolean;
}

/** What a created model is: the file's bytes (its serialized form) and the session on them. */
export interface OnnxModel {
  bytes: Uint8Array;
  session: ort.InferenceSession;
  inputs: Port[];
  outputs: Port[];
  /** Every input's and output's first dimension is free: items of a batch run as one. */
  batchable: boolean;
}

const DTYPES: readonly DType[] = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"];
const isDType = (type: string): type is DType => (DTYPES as readonly string[]).includes(type);

const free = (d: Dim | undefined) => typeof d === "string" || (typeof d === "number" && d < 0);
const shapeText = (shape: Dim[]) => (shape.length === 0 ? "any shape" : `[${shape.join(", ")}]`);
const describe = (p: Port) => `${p.name} (${p.tensor ? `${p.dtype} ${shapeText(p.shape)}` : "not a tensor"})`;
const listing = (ports: Port[]) => ports.map(describe).join(", ");

function portsOf(metadata: readonly ort.InferenceSession.ValueMetadata[]): Port[] {
  return metadata.map((m) =>
    m.isTensor
      ? { name: m.name, dtype: m.type, shape: m.shape.map((d) => (typeof d === "number" && d < 0 ? -1 : d)), tensor: true }
      : { name: m.name, dtype: "", shape: [], tensor: false },
  );
}

// A session holds native memory outside the JavaScript heap: a model let go (an instance
// evicted, a revision superseded) gives it back once collected.
const sessions = new FinalizationRegistry<ort.InferenceSession>((session) => void session.release().catch(() => {}));

/**
 * One thread per session, not spinning: the engine runs a model in several children at
 * once (max_replicas), and ONNX Runtime's default — a pool as wide as the machine whose
 * threads spin between runs — would have every child's pool compete for the same cores
 * (measured: 2.5 ms of a child's CPU per one-image predict instead of 0.3).
 */
const sessionOptions: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
};

/** The model of these bytes, or invalid_argument with ONNX Runtime's reason. */
async function load(bytes: Uint8Array): Promise<OnnxModel> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, sessionOptions);
  } catch (error) {
    throw new PluginError("invalid_argument", `the ONNX file does not load: ${error instanceof Error ? error.message : String(error)}`);
  }
  const inputs = portsOf(session.inputMetadata);
  const outputs = portsOf(session.outputMetadata);
  const batchable = [...inputs, ...outputs].every((p) => p.tensor && p.shape.length > 0 && free(p.shape[0]));
  const model = { bytes, session, inputs, outputs, batchable };
  sessions.register(model, session);
  return model;
}

/** What the model is, as the create's state: its inputs and outputs. */
const stateOf = (m: OnnxModel) => ({ inputs: m.inputs, outputs: m.outputs, batchable: m.batchable });

const CWD = process.cwd();

/**
 * The file at `path`, if Node's permission model lets this plugin read it. A plugin with
 * no `permissions` could read anything the server's user can (its database, its keys):
 * then no path is read at all, only bytes.
 */
async function readModelFile(path: string): Promise<Uint8Array> {
  // Relative to the child's working directory: the server's, which it inherits.
  const file = resolve(CWD, path);
  const fix =
    "list its folder in the plugin's config, plugins[i].permissions.read (with plugins[i].permissions.addons: true), or send the file's bytes";
  const where = file === path ? "" : ` (a relative path is taken from the server's working directory, ${CWD})`;
  if (!process.permission) {
    throw new PluginError("permission_denied", `args[0]: the onnx plugin reads no model file when it has no permissions configured; ${fix}`);
  }
  if (!process.permission.has("fs.read", file)) {
    throw new PluginError("permission_denied", `args[0]: the onnx plugin may not read ${JSON.stringify(file)}${where}; ${fix}`);
  }
  try {
    return await readFile(file);
  } catch (error) {
    throw new PluginError("invalid_argument", `args[0]: cannot read ${JSON.stringify(file)}${where}: ${(error as Error).message}`);
  }
}

const file = z
  .union([z.custom<Uint8Array>((v) => v instanceof Uint8Array), z.string().min(1)], { error: "must be the ONNX file's bytes, or its path" })
  .describe("the ONNX file: its bytes, or its path on the server, in a folder listed in the plugin's permissions.read");

const port = z.object({
  name: z.string(),
  dtype: z.string().describe('element type, e.g. "float32" ("" when not a tensor)'),
  shape: z
    .array(z.union([z.number(), z.string()]))
    .describe('each dimension: a size, a symbolic name such as "N" (any size), or -1 (any size, unnamed)'),
  tensor: z.boolean(),
});

const tensor = z.custom<Tensor>((v) => v instanceof Tensor, "must be a tensor");
/** Nested rows of numbers (or booleans), as JSON carries them: made a tensor of the input's dtype. */
const rows = z.array(z.unknown());
const feeds = z
  .union([tensor, rows, z.record(z.string(), z.union([tensor, rows]))], {
    error: "must be a tensor or rows of numbers (a model of one input), or a map of input name to either",
  })
  .describe(
    "the model's inputs: a tensor (or rows of numbers, as JSON) for a model of one input, or {input name: tensor or rows}; the model's state lists them",
  );

type Given = Tensor | unknown[];

const ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
} as const;

/** Rows of numbers as a tensor of `dtype`, or an invalid_argument saying what they must be. */
function fromRows(dtype: DType, value: unknown[], at: string): Tensor {
  const shape: number[] = [];
  for (let v: unknown = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  const flat: unknown[] = [];
  const walk = (v: unknown, depth: number): boolean => {
    if (depth < shape.length) return Array.isArray(v) && v.length === shape[depth] && v.every((x) => walk(x, depth + 1));
    flat.push(v);
    return typeof v === "number" || typeof v === "boolean";
  };
  const integers = dtype !== "float32" && dtype !== "float64";
  if (!walk(value, 0) || (integers && !flat.every((x) => typeof x === "boolean" || Number.isInteger(x)))) {
    throw new PluginError(
      "invalid_argument",
      `${at}: rows must be arrays of one length each, down to ${integers ? "integers" : "numbers"} (the input is ${dtype})`,
    );
  }
  const numbers = flat.map(Number);
  if (dtype === "int64") return new Tensor(dtype, shape, BigInt64Array.from(numbers, BigInt));
  if (dtype === "uint64") return new Tensor(dtype, shape, BigUint64Array.from(numbers, BigInt));
  return new Tensor(dtype, shape, ARRAYS[dtype].from(numbers) as never);
}

/** What one predict asks for, checked against the model. */
interface Request {
  feeds: Record<string, Tensor>;
  outputs: string[];
}

/** The item's feeds and outputs, or an invalid_argument naming what the model takes. */
function request(model: OnnxModel, value: Given | Record<string, Given>, wanted: string[] | undefined): Request {
  const takes = `the model takes ${listing(model.inputs)}`;
  const alone = value instanceof Tensor || Array.isArray(value);
  let given: Record<string, Given>;
  if (alone) {
    if (model.inputs.length !== 1) throw new PluginError("invalid_argument", `args[0]: one input alone, but ${takes}: send {name: tensor}`);
    given = { [model.inputs[0]!.name]: value };
  } else given = value;
  const converted: Record<string, Tensor> = {};
  for (const name of Object.keys(given)) {
    if (!model.inputs.some((p) => p.name === name)) throw new PluginError("invalid_argument", `args[0]: no input ${JSON.stringify(name)}; ${takes}`);
  }
  for (const p of model.inputs) {
    const at = alone ? "args[0]" : `args[0].${p.name}`;
    if (!given[p.name]) throw new PluginError("invalid_argument", `args[0]: input ${JSON.stringify(p.name)} is missing; ${takes}`);
    if (!p.tensor || !isDType(p.dtype)) {
      throw new PluginError(
        "invalid_argument",
        `${at}: input ${describe(p)} is of a type Plinth tensors do not carry; this model cannot be served here`,
      );
    }
    const g = given[p.name]!;
    const t = g instanceof Tensor ? g : fromRows(p.dtype, g, at);
    converted[p.name] = t;
    const fits =
      t.dtype === p.dtype && (p.shape.length === 0 || (t.shape.length === p.shape.length && p.shape.every((d, i) => free(d) || d === t.shape[i])));
    if (!fits)
      throw new PluginError(
        "invalid_argument",
        `${at}: must be a ${p.dtype} tensor of shape ${shapeText(p.shape)}, got ${t.dtype} [${t.shape.join(", ")}]`,
      );
  }
  const outputs = wanted ?? model.outputs.map((p) => p.name);
  for (const name of outputs) {
    const p = model.outputs.find((o) => o.name === name);
    if (!p) throw new PluginError("invalid_argument", `kwargs.outputs: no output ${JSON.stringify(name)}; the model gives ${listing(model.outputs)}`);
    if (!p.tensor || !isDType(p.dtype)) {
      throw new PluginError("invalid_argument", `kwargs.outputs: output ${describe(p)} is of a type Plinth tensors do not carry; ask for the others`);
    }
  }
  return { feeds: converted, outputs };
}

const ortTensor = (t: Tensor) => new ort.Tensor(t.dtype, t.data, [...t.shape]);

/** ORT's output as a Plinth tensor, rows [from, to) of its first dimension when given (a copy: ORT reuses nothing, but the caller may keep it). */
function plinthTensor(name: string, value: ort.Tensor, rows?: [number, number]): Tensor {
  if (!isDType(value.type)) throw new PluginError("invalid_argument", `output ${name} is ${value.type}, which Plinth tensors do not carry`);
  const dims = [...value.dims];
  const data = value.data as TensorData;
  if (!rows) return new Tensor(value.type, dims, data.slice() as never);
  const per = dims.slice(1).reduce((a, b) => a * b, 1);
  return new Tensor(value.type, [rows[1] - rows[0], ...dims.slice(1)], data.slice(rows[0] * per, rows[1] * per) as never);
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** One request alone. */
async function runOne(model: OnnxModel, r: Request): Promise<Record<string, Tensor>> {
  let out: ort.InferenceSession.OnnxValueMapType;
  try {
    out = await model.session.run(Object.fromEntries(Object.entries(r.feeds).map(([k, t]) => [k, ortTensor(t)])), r.outputs);
  } catch (error) {
    throw new PluginError("invalid_argument", `the model did not run on these inputs: ${message(error)}`);
  }
  return Object.fromEntries(r.outputs.map((name) => [name, plinthTensor(name, out[name] as ort.Tensor)]));
}

/** Typed arrays of one kind, end to end. */
function concat(parts: TensorData[]): TensorData {
  const Ctor = parts[0]!.constructor as new (n: number) => TensorData & { set(a: ArrayLike<unknown>, at: number): void };
  const all = new Ctor(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p as ArrayLike<unknown>, at);
    at += p.length;
  }
  return all;
}

/**
 * Requests whose inputs agree beyond their first dimension, run as one: each input's
 * rows stacked, each output split back by rows. If the run fails, or an output does not
 * come back with one row per input row, each request runs alone (so that a bad one fails
 * alone).
 */
async function runStacked(model: OnnxModel, group: Request[]): Promise<(Record<string, Tensor> | Error)[]> {
  const alone = () => Promise.all(group.map((r) => runOne(model, r).catch((error: unknown) => error as Error)));
  if (group.length === 1) return alone();
  const rows = group.map((r) => r.feeds[model.inputs[0]!.name]!.shape[0]!);
  const total = rows.reduce((a, b) => a + b, 0);
  const outputs = [...new Set(group.flatMap((r) => r.outputs))];
  const feeds = Object.fromEntries(
    model.inputs.map((p) => {
      const first = group[0]!.feeds[p.name]!;
      return [p.name, new ort.Tensor(first.dtype, concat(group.map((r) => r.feeds[p.name]!.data)), [total, ...first.shape.slice(1)])];
    }),
  );
  let out: ort.InferenceSession.OnnxValueMapType;
  try {
    out = await model.session.run(feeds, outputs);
  } catch {
    return alone();
  }
  if (outputs.some((name) => (out[name] as ort.Tensor).dims[0] !== total)) return alone();
  let at = 0;
  return group.map((r, i) => {
    const mine: [number, number] = [at, at + rows[i]!];
    at += rows[i]!;
    return Object.fromEntries(r.outputs.map((name) => [name, plinthTensor(name, out[name] as ort.Tensor, mine)]));
  });
}

/** Every input agrees on its rows, and on every dimension after the first. */
function stackKey(model: OnnxModel, r: Request): string | undefined {
  const rows = r.feeds[model.inputs[0]!.name]!.shape[0];
  if (model.inputs.some((p) => r.feeds[p.name]!.shape[0] !== rows)) return undefined;
  return JSON.stringify(model.inputs.map((p) => r.feeds[p.name]!.shape.slice(1)));
}

type Item = BatchItem<[Given | Record<string, Given>], { outputs?: string[] | undefined }>;

async function predictBatch(model: OnnxModel, items: Item[]): Promise<(PluginValue | Error)[]> {
  const results: (PluginValue | Error)[] = new Array(items.length);
  const groups = new Map<string, { index: number; request: Request }[]>();
  const single: { index: number; request: Request }[] = [];
  for (const [index, item] of items.entries()) {
    try {
      const r = request(model, item.args[0], item.kwargs.outputs);
      const key = model.batchable ? stackKey(model, r) : undefined;
      if (key === undefined) single.push({ index, request: r });
      else groups.set(key, [...(groups.get(key) ?? []), { index, request: r }]);
    } catch (error) {
      results[index] = error as Error;
    }
  }
  for (const group of groups.values()) {
    const answers = await runStacked(
      model,
      group.map((g) => g.request),
    );
    for (const [i, g] of group.entries()) results[g.index] = answers[i]!;
  }
  for (const { index, request: r } of single) results[index] = await runOne(model, r).catch((error: unknown) => error as Error);
  return results;
}

export default definePlugin({
  name: "onnx",
  description: "ONNX models (exported from PyTorch, scikit-learn, TensorFlow…) on ONNX Runtime's CPU build; Node only",
  models: {
    "onnx.Model": defineModel({
      description: "an ONNX file: create from its bytes or a path, predict with tensors by input name; the create's state lists inputs and outputs",
      instantiate: {
        args: z.tuple([file]),
        state: z.object({
          inputs: z.array(port),
          outputs: z.array(port),
          batchable: z.boolean().describe("every input's and output's first dimension is free: a batch of predicts runs as one"),
        }),
        run: async (ctx, [source]) => {
          const model = await load(typeof source === "string" ? await readModelFile(source) : new Uint8Array(source));
          ctx.report(stateOf(model));
          return model;
        },
      },
      predict: {
        // A batch of rows costs ORT little more than one row: predicts waiting on a model go as one run.
        batch: { maxSize: 64, maxWaitMs: 2 },
        args: z.tuple([feeds]),
        kwargs: z.object({
          outputs: z.array(z.string()).min(1).optional().describe("the outputs to return, by name; default: all"),
        }),
        run: (_ctx, model, items) => predictBatch(model, items),
      },
      serialize: (model) => model.bytes,
      // A copy (new Uint8Array, not slice: on a Buffer that is a view): the instance keeps its bytes.
      deserialize: (bytes) => load(new Uint8Array(bytes)),
    }),
  },
});
