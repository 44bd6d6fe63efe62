/**
 * Binary encoding without a copy per nesting level. protobuf-es's toBinary copies a
 * sub-message's bytes into its parent at every level (BinaryWriter.join), so a 1 MB
 * tensor five messages deep is copied six times. Here large strings and bytes are kept
 * by reference and a sub-message's length is summed from its parts: the result is a
 * list of chunks to write as they are (a writev on a pipe) or to join once.
 * @module
 */
import { type DescField, type DescMessage, fromJson, type JsonObject, type MessageShape, ScalarType } from "@bufbuild/protobuf";
import { isScalarZeroValue } from "@bufbuild/protobuf/reflect";
import { WireType } from "@bufbuild/protobuf/wire";
import { isWrapperDesc, StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";

type UnknownField = { no: number; wireType: WireType; data: Uint8Array };

/** Strings and bytes up to this size are copied as usual. */
const SMALL_BYTES = 2048;

const utf8 = new TextEncoder();

/**
 * The UTF-8 of a message's string oneof member, where the caller already holds it: the
 * server forwards a plugin's JSON text without decoding it to a string only to encode
 * it again. The string itself is never read when the message is encoded here.
 */
export const utf8Strings: WeakMap<object, Uint8Array> = new WeakMap();

/**
 * Writes into one growing array, a sub-message's length in a byte kept for it ahead of
 * its content (moved up when the length needs more): protobuf-es's BinaryWriter makes a
 * writer of JS arrays and a copy per sub-message, most of what a small call allocated.
 */
class ChunkWriter {
  #buf = new Uint8Array(256);
  #view = new DataView(this.#buf.buffer);
  #pos = 0;
  /** The output before the open range: ranges of #buf ({start, end}) and large arrays kept by reference, in order. */
  readonly #segments: (Uint8Array | { start: number; end: number })[] = [];
  /** Where the open range of #buf begins. */
  #rangeStart = 0;
  /** Bytes in large arrays so far. */
  #large = 0;
  /** Per open sub-message: its length byte's offset, #segments' length and #large then. */
  readonly #forks: number[] = [];

  #ensure(n: number): void {
    if (this.#pos + n <= this.#buf.byteLength) return;
    const grown = new Uint8Array(Math.max(this.#buf.byteLength * 2, this.#pos + n));
    grown.set(this.#buf.subarray(0, this.#pos));
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }

  /** Room for `n` bytes at the end: their offset (read #buf and #view after it: it may grow them). */
  #take(n: number): number {
    this.#ensure(n);
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  uint32(value: number): void {
    this.#varint64(value, 0);
  }

  /** A 64-bit varint from its two 32-bit halves. */
  #varint64(low: number, high: number): void {
    this.#ensure(10);
    let lo = low >>> 0;
    let hi = high >>> 0;
    while (hi > 0 || lo > 127) {
      this.#buf[this.#pos++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.#buf[this.#pos++] = lo;
  }

  #uint64(value: bigint): void {
    const v = BigInt.asUintN(64, value);
    this.#varint64(Number(v & 0xffffffffn), Number(v >> 32n));
  }

  tag(number: number, wireType: WireType): void {
    this.uint32((number << 3) | wireType);
  }

  raw(bytes: Uint8Array): void {
    const at = this.#take(bytes.byteLength);
    this.#buf.set(bytes, at);
  }

  bytes(bytes: Uint8Array): void {
    this.uint32(bytes.byteLength);
    this.raw(bytes);
  }

  string(value: string): void {
    // Up to 42 UTF-16 units make at most 126 bytes: a one-byte length, known once written.
    if (value.length <= 42) {
      this.#ensure(1 + 3 * value.length);
      const at = this.#pos;
      const { written } = utf8.encodeInto(value, this.#buf.subarray(at + 1, at + 1 + 3 * value.length));
      this.#buf[at] = written;
      this.#pos = at + 1 + written;
      return;
    }
    this.bytes(utf8.encode(value));
  }

  // biome-ignore lint/suspicious/noExplicitAny: each case passes the value its scalar type holds
  scalar(type: ScalarType, value: any): void {
    let at: number;
    switch (type) {
      case ScalarType.STRING:
        this.string(value);
        return;
      case ScalarType.BOOL:
        at = this.#take(1);
        this.#buf[at] = value ? 1 : 0;
        return;
      case ScalarType.DOUBLE:
        at = this.#take(8);
        this.#view.setFloat64(at, value, true);
        return;
      case ScalarType.FLOAT:
        at = this.#take(4);
        this.#view.setFloat32(at, value, true);
        return;
      case ScalarType.INT32:
        // A negative int32 is sign-extended to ten bytes, as protobuf says.
        this.#varint64(value, value < 0 ? -1 : 0);
        return;
      case ScalarType.UINT32:
        this.uint32(value);
        return;
      case ScalarType.SINT32:
        this.uint32((value << 1) ^ (value >> 31));
        return;
      case ScalarType.INT64:
      case ScalarType.UINT64:
        this.#uint64(BigInt(value));
        return;
      case ScalarType.SINT64: {
        const v = BigInt.asIntN(64, BigInt(value));
        this.#uint64((v << 1n) ^ (v >> 63n));
        return;
      }
      case ScalarType.FIXED32:
        at = this.#take(4);
        this.#view.setUint32(at, value, true);
        return;
      case ScalarType.SFIXED32:
        at = this.#take(4);
        this.#view.setInt32(at, value, true);
        return;
      case ScalarType.FIXED64:
        at = this.#take(8);
        this.#view.setBigUint64(at, BigInt.asUintN(64, BigInt(value)), true);
        return;
      case ScalarType.SFIXED64:
        at = this.#take(8);
        this.#view.setBigInt64(at, BigInt.asIntN(64, BigInt(value)), true);
        return;
      case ScalarType.BYTES:
        this.bytes(value);
        return;
    }
  }

  /** A length-delimited value kept by reference: its length here, its bytes as they are. */
  large(bytes: Uint8Array): void {
    this.uint32(bytes.byteLength);
    this.#segments.push({ start: this.#rangeStart, end: this.#pos }, bytes);
    this.#rangeStart = this.#pos;
    this.#large += bytes.byteLength;
  }

  /** Opens a sub-message (its tag written): one byte kept for its length. */
  fork(): void {
    this.#forks.push(this.#take(1), this.#segments.length, this.#large);
  }

  /** Closes the sub-message: its length, in the byte kept, and more moved up where it needs them. */
  join(): void {
    const large = this.#forks.pop()!;
    const segments = this.#forks.pop()!;
    const at = this.#forks.pop()!;
    const length = this.#pos - at - 1 + (this.#large - large);
    let more = 0;
    for (let v = length >>> 7; v > 0; v >>>= 7) more++;
    if (more > 0) {
      this.#ensure(more);
      this.#buf.copyWithin(at + 1 + more, at + 1, this.#pos);
      this.#pos += more;
      for (let i = segments; i < this.#segments.length; i++) {
        const segment = this.#segments[i]!;
        if (segment instanceof Uint8Array) continue;
        if (segment.start > at) segment.start += more;
        if (segment.end > at) segment.end += more;
      }
      if (this.#rangeStart > at) this.#rangeStart += more;
    }
    const end = this.#pos;
    this.#pos = at;
    this.uint32(length);
    this.#pos = end;
  }

  chunks(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const segment of this.#segments) {
      if (segment instanceof Uint8Array) out.push(segment);
      else if (segment.end > segment.start) out.push(this.#buf.subarray(segment.start, segment.end));
    }
    if (this.#pos > this.#rangeStart) out.push(this.#buf.subarray(this.#rangeStart, this.#pos));
    return out;
  }
}

/** The message's binary encoding as chunks, in order; large bytes fields are the caller's own arrays. */
export function encodeChunks<S extends DescMessage>(schema: S, message: MessageShape<S>): Uint8Array[] {
  const writer = new ChunkWriter();
  writeMessage(writer, schema, message);
  return writer.chunks();
}

/** The message's binary encoding in one array: one copy of its large fields, not one per level. */
export function encodeBinary<S extends DescMessage>(schema: S, message: MessageShape<S>): Uint8Array {
  return joinChunks(encodeChunks(schema, message));
}

export function joinChunks(chunks: Uint8Array[], size = chunks.reduce((n, c) => n + c.byteLength, 0)): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

// The message is read as protobuf-es lays it out (fields by local name, a oneof as
// {case, value}, a map as an object), not through reflect(): a reflected message wraps
// every sub-message it gives in a new object holding two Maps, a third of what a small
// call allocated (issue 22). The rules of presence are protobuf-es's own (reflect/unsafe.js).

type Fields = Record<string, unknown>;
const IMPLICIT = 2; // FeatureSet.FieldPresence.IMPLICIT
const sorted = new WeakMap<DescMessage, readonly DescField[]>();

function sortedFields(desc: DescMessage): readonly DescField[] {
  let fields = sorted.get(desc);
  if (!fields) {
    fields = [...desc.fields].sort((a, b) => a.number - b.number);
    sorted.set(desc, fields);
  }
  return fields;
}

/** A set field's value (undefined when it is not set), as its message holds it. */
function setValue(message: Fields, field: DescField): unknown {
  if (field.oneof) {
    const oneof = message[field.oneof.localName] as { case?: string; value?: unknown };
    return oneof.case === field.localName ? oneof.value : undefined;
  }
  const value = message[field.localName];
  if (field.presence !== IMPLICIT) return value !== undefined && Object.hasOwn(message, field.localName) ? value : undefined;
  switch (field.fieldKind) {
    case "list":
      return (value as unknown[]).length > 0 ? value : undefined;
    case "map":
      for (const _ in value as object) return value;
      return undefined;
    case "scalar":
      return isScalarZeroValue(field.scalar, value) ? undefined : value;
    case "enum":
      return value !== field.enum.values[0]!.number ? value : undefined;
  }
  return value;
}

function writeMessage(writer: ChunkWriter, desc: DescMessage, message: Fields): void {
  for (const field of sortedFields(desc)) {
    const value = setValue(message, field);
    if (value !== undefined) writeField(writer, message, field, value);
  }
  for (const { no, wireType, data } of (message.$unknown as UnknownField[] | undefined) ?? []) {
    writer.tag(no, wireType);
    writer.raw(data);
  }
}

function writeField(writer: ChunkWriter, message: Fields, field: DescField, value: unknown): void {
  switch (field.fieldKind) {
    case "scalar":
    case "enum": {
      const held = field.oneof && field.scalar === ScalarType.STRING ? utf8Strings.get(message) : undefined;
      if (held) {
        writer.tag(field.number, WireType.LengthDelimited);
        if (held.byteLength > SMALL_BYTES) writer.large(held);
        else writer.bytes(held);
        return;
      }
      writeScalar(writer, field.scalar ?? ScalarType.INT32, field.number, value);
      return;
    }
    case "message":
      writeSubMessage(writer, field, field.message, field.number, value);
      return;
    case "list": {
      const list = value as unknown[];
      if (list.length === 0) return;
      if (field.listKind === "message") {
        for (const item of list) writeSubMessage(writer, field, field.message, field.number, item);
        return;
      }
      const type = field.scalar ?? ScalarType.INT32;
      if (field.packed) {
        writer.tag(field.number, WireType.LengthDelimited);
        writer.fork();
        for (const item of list) writer.scalar(type, item);
        writer.join();
        return;
      }
      for (const item of list) writeScalar(writer, type, field.number, item);
      return;
    }
    case "map":
      for (const [key, item] of Object.entries(value as object)) {
        writer.tag(field.number, WireType.LengthDelimited);
        writer.fork();
        writeScalar(writer, field.mapKey, 1, mapKey(key, field.mapKey));
        if (field.mapKind === "message") writeSubMessage(writer, field, field.message, 2, item);
        else writeScalar(writer, field.scalar ?? ScalarType.INT32, 2, item);
        writer.join();
      }
      return;
  }
}

/** A map's key as its scalar type writes it (an object's keys are strings). */
function mapKey(key: string, type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return key;
    case ScalarType.BOOL:
      return key === "true";
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      return key; // the writer takes a 64-bit integer as its decimal string
    default:
      return Number.parseInt(key, 10);
  }
}

function writeSubMessage(writer: ChunkWriter, field: DescField, desc: DescMessage, number: number, value: unknown): void {
  if ("delimitedEncoding" in field && field.delimitedEncoding)
    throw new Error(`cannot encode ${field.toString()}: delimited (group) encoding is not supported here`);
  writer.tag(number, WireType.LengthDelimited);
  writer.fork();
  writeMessage(writer, desc, asMessage(field, desc, value));
  writer.join();
}

/**
 * The message a field holds, where protobuf-es holds it in another form (as reflect's
 * messageToReflect undoes it): a wrapper type (google.protobuf.Int32Value…) in a singular
 * field as its value; google.protobuf.Struct, but within a Value, as a JSON object.
 */
function asMessage(field: DescField, desc: DescMessage, value: unknown): Fields {
  if (field.fieldKind === "message" && !field.oneof && isWrapperDesc(desc)) return { $typeName: desc.typeName, value };
  if (desc.typeName === StructSchema.typeName && field.parent.typeName !== ValueSchema.typeName) return fromJson(StructSchema, value as JsonObject);
  return value as Fields;
}

function writeScalar(writer: ChunkWriter, type: ScalarType, number: number, value: unknown): void {
  if (type === ScalarType.BYTES && (value as Uint8Array).byteLength > SMALL_BYTES) {
    writer.tag(number, WireType.LengthDelimited);
    writer.large(value as Uint8Array);
    return;
  }
  if (type === ScalarType.STRING && (value as string).length > SMALL_BYTES) {
    writer.tag(number, WireType.LengthDelimited);
    writer.large(utf8.encode(value as string));
    return;
  }
  writer.tag(number, wireTypeOf(type));
  writer.scalar(type, value);
}

function wireTypeOf(type: ScalarType): WireType {
  switch (type) {
    case ScalarType.BYTES:
    case ScalarType.STRING:
      return WireType.LengthDelimited;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return WireType.Bit32;
    default:
      return WireType.Varint;
  }
}
