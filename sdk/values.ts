/**
 * The values a plugin function receives and returns: JSON, bytes, or tensors.
 * @module
 */

/** A JSON value, as JSON.parse returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Element types of a {@link Tensor}, named as in NumPy. */
export type DType = "float32" | "float64" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64" | "bool";

/** The typed array that holds each dtype's elements. */
export interface TensorDataOf {
  float32: Float32Array;
  float64: Float64Array;
  int8: Int8Array;
  int16: Int16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  uint16: Uint16Array;
  uint32: Uint32Array;
  uint64: BigUint64Array;
  bool: Uint8Array;
}

/** Any tensor's elements. */
export type TensorData = TensorDataOf[DType];

/** An element of a tensor of dtype D: a bigint for the 64-bit integers, a number else. */
export type ElementOf<D extends DType> = D extends "int64" | "uint64" ? bigint : number;

const arrayTypes = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
} as const;

type ArrayCtor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => TensorData;

/**
 * Marks a tensor, and the spec of a tensor guard, whichever copy of the SDK made it: a
 * plugin may bring a copy of its own (its own node_modules, or a build of it) beside the
 * one its child runs on, and `instanceof` would then tell their tensors apart.
 */
const tensorMark = Symbol.for("plinth.sdk.Tensor");
const specMark = Symbol.for("plinth.sdk.TensorSpec");

/**
 * A dense, row-major tensor. `Tensor<"float32">` has a Float32Array in `data`; a tensor
 * of unknown dtype narrows with {@link Tensor.is}.
 *
 * @example
 * ```ts
 * const t = new Tensor("float32", [2, 2], new Float32Array([1, 2, 3, 4]));
 * t.at(1, 0); // 3
 * t.column(1); // [2, 4]
 * ```
 */
export class Tensor<D extends DType = DType> {
  /** Element type. */
  readonly dtype: D;
  /** Size of each dimension. */
  readonly shape: readonly number[];
  /** The elements, row-major. */
  readonly data: TensorDataOf[D];

  /** Whether `value` is a tensor, made by this copy of the SDK or another: `value instanceof Tensor`. */
  static [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[tensorMark] === true;
  }

  constructor(dtype: D, shape: readonly number[], data: TensorDataOf[D]) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!(data instanceof arrayTypes[dtype])) {
      throw new TypeError(`tensor of dtype ${dtype} needs a ${arrayTypes[dtype].name}`);
    }
    if (data.length !== size) {
      throw new TypeError(`tensor of shape [${shape.join(", ")}] needs ${size} elements, got ${data.length}`);
    }
    this.dtype = dtype;
    this.shape = [...shape];
    this.data = data;
    Object.defineProperty(this, tensorMark, { value: true });
  }

  /**
   * Reads a tensor from little-endian bytes, as it travels on the wire. When the bytes
   * are aligned for the element type the tensor shares them (no copy), else it copies.
   *
   * @example
   * ```ts
   * const t = Tensor.fromBytes("uint8", [3], new Uint8Array([1, 2, 3]));
   * ```
   */
  static fromBytes<D extends DType>(dtype: D, shape: readonly number[], bytes: Uint8Array): Tensor<D> {
    const Ctor = arrayTypes[dtype] as unknown as ArrayCtor & { BYTES_PER_ELEMENT: number };
    if (bytes.byteLength % Ctor.BYTES_PER_ELEMENT !== 0) {
      throw new TypeError(`tensor of dtype ${dtype}: ${bytes.byteLength} bytes is not a whole number of elements`);
    }
    // A view when the bytes are aligned for the element type (a MB tensor is not copied
    // once more); else a copy, which is. Not bytes.slice(): on a Node Buffer that is a
    // view of the whole pooled buffer.
    const elements = bytes.byteLength / Ctor.BYTES_PER_ELEMENT;
    if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) {
      return new Tensor(dtype, shape, new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, elements) as TensorDataOf[D]);
    }
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    return new Tensor(dtype, shape, new Ctor(copy.buffer, 0, elements) as TensorDataOf[D]);
  }

  /**
   * Whether this tensor's elements are of `dtype`; narrows its type.
   *
   * @example
   * ```ts
   * if (value instanceof Tensor && value.is("float32")) value.data; // a Float32Array
   * ```
   */
  is<E extends DType>(dtype: E): this is Tensor<E> {
    return (this.dtype as DType) === dtype;
  }

  /** The elements as little-endian bytes (every supported host is little-endian). */
  toBytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  /**
   * The element at the given indices.
   *
   * @example
   * ```ts
   * new Tensor("int32", [2], new Int32Array([7, 8])).at(1); // 8
   * ```
   */
  at(...indices: number[]): ElementOf<D> {
    if (indices.length !== this.shape.length) {
      throw new RangeError(`tensor has ${this.shape.length} dimensions, got ${indices.length} indices`);
    }
    let offset = 0;
    indices.forEach((index, dim) => {
      const size = this.shape[dim] ?? 0;
      if (index < 0 || index >= size) throw new RangeError(`index ${index} out of range for dimension ${dim} of size ${size}`);
      offset = offset * size + index;
    });
    return this.data[offset] as ElementOf<D>;
  }

  /**
   * The rows of a 2-D tensor as arrays of numbers.
   *
   * @example
   * ```ts
   * new Tensor("float64", [1, 2], new Float64Array([1, 2])).toRows(); // [[1, 2]]
   * ```
   */
  toRows(): number[][] {
    const [rows, cols] = this.#matrix("toRows");
    const out: number[][] = [];
    for (let r = 0; r < rows; r++) out.push(Array.from(this.data.subarray(r * cols, (r + 1) * cols) as ArrayLike<number | bigint>, Number));
    return out;
  }

  /**
   * One column of a 2-D tensor as numbers.
   *
   * @example
   * ```ts
   * new Tensor("float64", [2, 2], new Float64Array([1, 2, 3, 4])).column(1); // [2, 4]
   * ```
   */
  column(index: number): number[] {
    const [rows, cols] = this.#matrix("column");
    if (index < 0 || index >= cols) throw new RangeError(`column ${index} out of range for ${cols} columns`);
    const out: number[] = [];
    for (let r = 0; r < rows; r++) out.push(Number(this.data[r * cols + index]));
    return out;
  }

  /**
   * A JSON-friendly view, for logs and small tensors: dtype, shape and the elements as
   * numbers (64-bit integers as strings). JSON.stringify uses it.
   *
   * @example
   * ```ts
   * JSON.stringify(new Tensor("int32", [2], new Int32Array([1, 2]))); // {"dtype":"int32","shape":[2],"data":[1,2]}
   * ```
   */
  toJSON(): { dtype: D; shape: number[]; data: (number | string)[] } {
    const data = Array.from(this.data as ArrayLike<number | bigint>, (x) => (typeof x === "bigint" ? x.toString() : x));
    return { dtype: this.dtype, shape: [...this.shape], data };
  }

  #matrix(what: string): [number, number] {
    const [rows, cols] = this.shape;
    if (this.shape.length !== 2 || rows === undefined || cols === undefined) {
      throw new RangeError(`${what} needs a 2-D tensor, got shape [${this.shape.join(", ")}]`);
    }
    return [rows, cols];
  }
}

/** What a tensor argument must be: its dtype, and its shape when given (-1: any size). */
export interface TensorSpec {
  readonly dtype: DType;
  readonly shape?: readonly number[];
}

/** The spec `isTensor` made `guard` for, if it did (this copy of the SDK or another). @internal */
export function tensorSpecOf(guard: unknown): TensorSpec | undefined {
  return typeof guard === "function" ? ((guard as unknown as Record<symbol, TensorSpec | undefined>)[specMark] ?? undefined) : undefined;
}

/**
 * A type guard for a tensor of `dtype`, and of `shape` when given (-1: any size in that
 * dimension). Made for a schema library's custom check, whose type it then states: the
 * function gets a `Tensor<D>`, whose `data` is the dtype's typed array, with no cast.
 * In a zod schema (`z.custom(isTensor(…))`) the published JSON Schema says what the
 * tensor must be (`"x-plinth-tensor": {"dtype", "shape"}`), so the server refuses a
 * wrong dtype or shape before a child runs; elsewhere the child checks it.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 *
 * const rows = z.custom<Tensor<"float32">>(isTensor("float32", [-1, 4]), "must be a float32 tensor of shape [n, 4]");
 * const first: Float32Array = rows.parse(new Tensor("float32", [1, 4], new Float32Array(4))).data;
 * ```
 */
export function isTensor<D extends DType>(dtype: D, shape?: readonly number[]): (value: unknown) => value is Tensor<D> {
  const guard = (value: unknown): value is Tensor<D> =>
    value instanceof Tensor &&
    value.is(dtype) &&
    (shape === undefined || (value.shape.length === shape.length && shape.every((size, i) => size === -1 || value.shape[i] === size)));
  Object.defineProperty(guard, specMark, { value: shape === undefined ? { dtype } : { dtype, shape: [...shape] } });
  return guard;
}

/**
 * A value a plugin function receives as an argument or returns: JSON, bytes, a tensor,
 * or an array or object of them (a list or map argument: `{ x: Tensor, y: Tensor }`).
 */
export type PluginValue = JsonValue | Uint8Array | Tensor | PluginValue[] | { [key: string]: PluginValue };

/** Positional arguments of a plugin call. */
export type Args = PluginValue[];

/** Keyword arguments of a plugin call. */
export type Kwargs = Record<string, PluginValue>;
