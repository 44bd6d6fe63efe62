/**
 * A multi-layer perceptron's weights as an ONNX model, written by hand: MatMul, Add and
 * Relu per layer, Softmax at the end. Four message types of onnx.proto are all it takes,
 * so they are encoded here with @bufbuild/protobuf's wire writer (the field numbers are
 * onnx.proto's) rather than generated from a vendored onnx.proto.
 * @module
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";

/** One dense layer: `kernel` [in, out] row-major (as ONNX MatMul takes it), `bias` [out]. */
export interface DenseLayer {
  kernel: Float32Array;
  bias: Float32Array;
  in: number;
  out: number;
}

export interface MlpGraphOptions {
  /** The graph's input, float32 [N, layers[0].in]; default "images". */
  inputName?: string;
  /** The graph's output, float32 [N, last layer's out]: the softmax; default "probabilities". */
  outputName?: string;
}

const FLOAT = 1; // TensorProto.DataType.FLOAT
const IR_VERSION = 8; // ONNX 1.10 and later
const OPSET = 13; // Softmax's axis defaults to -1 from opset 13: no attribute needed
const VARINT = 0;
const LENGTH = 2; // wire type of strings, bytes and messages

const message = (write: (w: BinaryWriter) => void): Uint8Array => {
  const w = new BinaryWriter();
  write(w);
  return w.finish();
};

/** TensorProto: dims=1, data_type=2, name=8, raw_data=9 (little-endian, as every host here is). */
const tensor = (name: string, dims: number[], data: Float32Array) =>
  message((w) => {
    for (const d of dims) w.tag(1, VARINT).int64(d);
    w.tag(2, VARINT).int32(FLOAT);
    w.tag(8, LENGTH).string(name);
    w.tag(9, LENGTH).bytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });

/**
 * ValueInfoProto: name=1, type=2; TypeProto: tensor_type=1; TypeProto.Tensor: elem_type=1,
 * shape=2; TensorShapeProto: dim=1; Dimension: dim_value=1 (a size) or dim_param=2 (a
 * symbolic name: any size).
 */
const valueInfo = (name: string, dims: (number | string)[]) => {
  const shape = message((s) => {
    for (const d of dims) {
      s.tag(1, LENGTH).bytes(message((dim) => (typeof d === "string" ? dim.tag(2, LENGTH).string(d) : dim.tag(1, VARINT).int64(d))));
    }
  });
  const tensorType = message((t) => {
    t.tag(1, VARINT).int32(FLOAT);
    t.tag(2, LENGTH).bytes(shape);
  });
  return message((w) => {
    w.tag(1, LENGTH).string(name);
    w.tag(2, LENGTH).bytes(message((t) => t.tag(1, LENGTH).bytes(tensorType)));
  });
};

/** NodeProto: input=1, output=2, name=3, op_type=4. */
const node = (op: string, inputs: string[], outputs: string[], name: string) =>
  message((w) => {
    for (const i of inputs) w.tag(1, LENGTH).string(i);
    for (const o of outputs) w.tag(2, LENGTH).string(o);
    w.tag(3, LENGTH).string(name);
    w.tag(4, LENGTH).string(op);
  });

/**
 * The ONNX model (a serialized ModelProto) of `layers`: input float32 [N, in] with N
 * symbolic (any batch), Relu between layers, Softmax over the last one's outputs.
 *
 * @example
 * ```ts
 * writeFileSync("mnist.onnx", mlpToOnnx(denseLayers(network)));
 * ```
 */
export function mlpToOnnx(layers: readonly DenseLayer[], { inputName = "images", outputName = "probabilities" }: MlpGraphOptions = {}): Uint8Array {
  const first = layers[0];
  const last = layers.at(-1);
  if (!first || !last) throw new RangeError("mlpToOnnx: no layers");
  const nodes: Uint8Array[] = [];
  const initializers: Uint8Array[] = [];
  let x = inputName;
  for (const [i, layer] of layers.entries()) {
    if (layer.kernel.length !== layer.in * layer.out || layer.bias.length !== layer.out) {
      throw new RangeError(
        `mlpToOnnx: layer ${i} is [${layer.in}, ${layer.out}] but has ${layer.kernel.length} weights and ${layer.bias.length} biases`,
      );
    }
    if (i > 0 && layer.in !== layers[i - 1]!.out)
      throw new RangeError(`mlpToOnnx: layer ${i} takes ${layer.in} inputs, layer ${i - 1} gives ${layers[i - 1]!.out}`);
    initializers.push(tensor(`W${i}`, [layer.in, layer.out], layer.kernel), tensor(`B${i}`, [layer.out], layer.bias));
    nodes.push(node("MatMul", [x, `W${i}`], [`mm${i}`], `matmul${i}`), node("Add", [`mm${i}`, `B${i}`], [`z${i}`], `add${i}`));
    x = `z${i}`;
    if (i < layers.length - 1) {
      nodes.push(node("Relu", [x], [`h${i}`], `relu${i}`));
      x = `h${i}`;
    }
  }
  nodes.push(node("Softmax", [x], [outputName], "softmax"));
  // GraphProto: node=1, name=2, initializer=5, input=11, output=12.
  const graph = message((w) => {
    for (const n of nodes) w.tag(1, LENGTH).bytes(n);
    w.tag(2, LENGTH).string("mlp");
    for (const t of initializers) w.tag(5, LENGTH).bytes(t);
    w.tag(11, LENGTH).bytes(valueInfo(inputName, ["N", first.in]));
    w.tag(12, LENGTH).bytes(valueInfo(outputName, ["N", last.out]));
  });
  // ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8; OperatorSetIdProto: domain=1 ("": ONNX's), version=2.
  return message((w) => {
    w.tag(1, VARINT).int64(IR_VERSION);
    w.tag(2, LENGTH).string("plinth");
    w.tag(7, LENGTH).bytes(graph);
    w.tag(8, LENGTH).bytes(
      message((o) => {
        o.tag(1, LENGTH).string("");
        o.tag(2, VARINT).int64(OPSET);
      }),
    );
  });
}
