/**
 * The values a plugin function receives and returns: JSON, bytes, or tensors.
 * @module
 */

/** A JSON value, as JSON.parse returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Element types of a {@link Tensor}, named as in NumPy. */
export type DType = "float32" | "float64" | "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64" | "bool";

/** The typed array that holds each dtype's elements. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

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

/**
 * A dense, row-major tensor.
 *
 * @example
 * ```ts
 * const t = new Tensor("float32", [2, 2], new Float32Array([1, 2, 3, 4]));
 * t.at(1, 0); // 3
 * ```
 */
export class Tensor {
  /** Element type. */
  readonly dtype: DType;
  /** Size of each dimension. */
  readonly shape: readonly number[];
  /** The elements, row-major. */
  readonly data: TensorData;

  constructor(dtype: DType, shape: readonly number[], data: TensorData) {
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
  static fromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
    const Ctor = arrayTypes[dtype];
    if (bytes.byteLength % Ctor.BYTES_PER_ELEMENT !== 0) {
      throw new TypeError(`tensor of dtype ${dtype}: ${bytes.byteLength} bytes is not a whole number of elements`);
    }
    // A view when the bytes are aligned for the element type (a MB tensor is not copied
    // once more); else a copy, which is. Not bytes.slice(): on a Node Buffer that is a
    // view of the whole pooled buffer.
    if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) {
      return new Tensor(dtype, shape, new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / Ctor.BYTES_PER_ELEMENT));
    }
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    return new Tensor(dtype, shape, new Ctor(copy.buffer, 0, copy.byteLength / Ctor.BYTES_PER_ELEMENT));
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
  at(...indices: number[]): number | bigint {
    if (indices.length !== this.shape.length) {
      throw new RangeError(`tensor has ${this.shape.length} dimensions, got ${indices.length} indices`);
    }
    let offset = 0;
    indices.forEach((index, dim) => {
      const size = this.shape[dim] ?? 0;
      if (index < 0 || index >= size) throw new RangeError(`index ${index} out of range for dimension ${dim} of size ${size}`);
      offset = offset * size + index;
    });
    return this.data[offset] as number | bigint;
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
    const [rows, cols] = this.shape;
    if (this.shape.length !== 2 || rows === undefined || cols === undefined) {
      throw new RangeError(`toRows needs a 2-D tensor, got shape [${this.shape.join(", ")}]`);
    }
    const out: number[][] = [];
    for (let r = 0; r < rows; r++) {
      out.push(Array.from(this.data.subarray(r * cols, (r + 1) * cols) as ArrayLike<number | bigint>, Number));
    }
    return out;
  }
}

/** A value a plugin function receives as an argument or returns. */
export type PluginValue = JsonValue | Uint8Array | Tensor;

/** Positional arguments of a plugin call. */
export type Args = PluginValue[];

/** Keyword arguments of a plugin call. */
export type Kwargs = Record<string, PluginValue>;
