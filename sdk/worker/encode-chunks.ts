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
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
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

class ChunkWriter {
  /** Scalars and small values go through protobuf-es's own writer, one per open message. */
  small = new BinaryWriter();
  /** The current message's chunks before what `small` holds. */
  #parts: Uint8Array[] = [];
  #stack: { parts: Uint8Array[]; small: BinaryWriter }[] = [];

  #flush(): void {
    const bytes = this.small.finish();
    if (bytes.byteLength > 0) this.#parts.push(bytes);
  }

  /** A length-delimited value kept by reference. */
  large(bytes: Uint8Array): void {
    this.small.uint32(bytes.byteLength);
    this.#flush();
    this.#parts.push(bytes);
  }

  fork(): void {
    this.#stack.push({ parts: this.#parts, small: this.small });
    this.#parts = [];
    this.small = new BinaryWriter();
  }

  join(): void {
    const inner = this.#parts;
    const tail = this.small.finish();
    ({ parts: this.#parts, small: this.small } = this.#stack.pop()!);
    // A message with nothing large in it costs what protobuf-es's own join costs.
    if (inner.length === 0) {
      this.small.bytes(tail);
      return;
    }
    if (tail.byteLength > 0) inner.push(tail);
    let size = 0;
    for (const part of inner) size += part.byteLength;
    this.small.uint32(size);
    this.#flush();
    for (const part of inner) this.#parts.push(part);
  }

  chunks(): Uint8Array[] {
    this.#flush();
    return this.#parts;
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
  for (const { no, wireType, data } of (message.$unknown as UnknownField[] | undefined) ?? []) writer.small.tag(no, wireType).raw(data);
}

function writeField(writer: ChunkWriter, message: Fields, field: DescField, value: unknown): void {
  switch (field.fieldKind) {
    case "scalar":
    case "enum": {
      const held = field.oneof && field.scalar === ScalarType.STRING ? utf8Strings.get(message) : undefined;
      if (held) {
        writer.small.tag(field.number, WireType.LengthDelimited);
        if (held.byteLength > SMALL_BYTES) writer.large(held);
        else writer.small.bytes(held);
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
        writer.small.tag(field.number, WireType.LengthDelimited).fork();
        for (const item of list) scalarValue(writer.small, type, item);
        writer.small.join();
        return;
      }
      for (const item of list) writeScalar(writer, type, field.number, item);
      return;
    }
    case "map":
      for (const [key, item] of Object.entries(value as object)) {
        writer.small.tag(field.number, WireType.LengthDelimited);
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
  writer.small.tag(number, WireType.LengthDelimited);
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
    writer.small.tag(number, WireType.LengthDelimited);
    writer.large(value as Uint8Array);
    return;
  }
  if (type === ScalarType.STRING && (value as string).length > SMALL_BYTES) {
    writer.small.tag(number, WireType.LengthDelimited);
    writer.large(utf8.encode(value as string));
    return;
  }
  scalarValue(writer.small.tag(number, wireTypeOf(type)), type, value);
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

// biome-ignore lint/suspicious/noExplicitAny: each case passes the value its scalar type holds
function scalarValue(w: BinaryWriter, type: ScalarType, value: any): void {
  switch (type) {
    case ScalarType.STRING:
      w.string(value);
      return;
    case ScalarType.BOOL:
      w.bool(value);
      return;
    case ScalarType.DOUBLE:
      w.double(value);
      return;
    case ScalarType.FLOAT:
      w.float(value);
      return;
    case ScalarType.INT32:
      w.int32(value);
      return;
    case ScalarType.INT64:
      w.int64(value);
      return;
    case ScalarType.UINT64:
      w.uint64(value);
      return;
    case ScalarType.FIXED64:
      w.fixed64(value);
      return;
    case ScalarType.BYTES:
      w.bytes(value);
      return;
    case ScalarType.FIXED32:
      w.fixed32(value);
      return;
    case ScalarType.SFIXED32:
      w.sfixed32(value);
      return;
    case ScalarType.SFIXED64:
      w.sfixed64(value);
      return;
    case ScalarType.SINT64:
      w.sint64(value);
      return;
    case ScalarType.UINT32:
      w.uint32(value);
      return;
    case ScalarType.SINT32:
      w.sint32(value);
      return;
  }
}
