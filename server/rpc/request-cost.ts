/**
 * What a request will cost to decode, counted on its raw bytes before anything decodes
 * it: decoding is linear in the number of values it holds (a `google.protobuf.Value` of a
 * million numbers is a million messages: seconds of the event loop), never in its bytes
 * alone (a 60 MB string or `bytes` field is one copy). So a request may hold at most
 * `server.limits.max_request_values` values — fields in protobuf, values in JSON — nested
 * at most MAX_DEPTH deep, and the count stops at the limit: refusing a huge request costs
 * no more than accepting the largest allowed one.
 */
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { PlinthError } from "../errors.ts";

/** Message nesting at most (protobuf's own default recursion limit). */
export const MAX_DEPTH = 100;

export function tooManyValues(max: number): PlinthError {
  return new PlinthError(
    "invalid_argument",
    `the request holds more than ${max} values (server.limits.max_request_values): send large JSON as json_text, and data as bytes or a tensor`,
  );
}

function tooDeep(): PlinthError {
  return new PlinthError("invalid_argument", `the request nests deeper than ${MAX_DEPTH} levels`);
}

const fieldsByNumber = new WeakMap<DescMessage, Map<number, DescField>>();

function fieldOf(desc: DescMessage, no: number): DescField | undefined {
  let fields = fieldsByNumber.get(desc);
  if (!fields) {
    fields = new Map(desc.fields.map((f) => [f.number, f]));
    fieldsByNumber.set(desc, fields);
  }
  return fields.get(no);
}

/** The message type a length-delimited occurrence of `field` holds, if any. */
function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  return undefined;
}

/**
 * Counts the values of a binary message of type `desc` — every field occurrence, every
 * element of a packed list, every map entry — walking into nested messages, so that a
 * JSON value in a `google.protobuf.Value` counts one, as in JSON text (its one field is
 * the value itself). Throws INVALID_ARGUMENT past `max` values or MAX_DEPTH levels, or
 * when the bytes are not a message of that type (what fromBinary would reject, found first).
 */
export function countBinaryValues(desc: DescMessage, bytes: Uint8Array, max: number): number {
  let count = 0;
  const walk = (type: DescMessage, reader: BinaryReader, end: number, depth: number) => {
    if (depth > MAX_DEPTH) throw tooDeep();
    // A Value's first field is the value its own occurrence counted already.
    let free = type.typeName === "google.protobuf.Value" ? 1 : 0;
    while (reader.pos < end) {
      const [no, wireType] = reader.tag();
      if (free > 0) free--;
      else if (++count > max) throw tooManyValues(max);
      const field = fieldOf(type, no);
      if (field && wireType === WireType.LengthDelimited) {
        const message = messageOf(field);
        const length = reader.uint32();
        const stop = reader.pos + length;
        if (stop > end) throw new Error("premature end of a length-delimited field");
        if (message) walk(message, reader, stop, depth + 1);
        else if (field.fieldKind === "map") walkEntry(field, reader, stop, depth + 1);
        else if (field.fieldKind === "list") {
          // A packed list: each element at least one byte.
          count += length;
          if (count > max) throw tooManyValues(max);
        }
        reader.pos = stop;
      } else {
        reader.skip(wireType, no);
      }
    }
    if (reader.pos !== end) throw new Error("a field runs past the end of its message");
  };
  const walkEntry = (field: DescField & { fieldKind: "map" }, reader: BinaryReader, end: number, depth: number) => {
    if (depth > MAX_DEPTH) throw tooDeep();
    while (reader.pos < end) {
      const [no, wireType] = reader.tag();
      // The entry counted already; its key and value are one value.
      if (no !== 1 && ++count > max) throw tooManyValues(max);
      if (no === 2 && field.mapKind === "message" && wireType === WireType.LengthDelimited) {
        const length = reader.uint32();
        const stop = reader.pos + length;
        if (stop > end) throw new Error("premature end of a map value");
        walk(field.message, reader, stop, depth + 1);
        reader.pos = stop;
      } else {
        reader.skip(wireType, no);
      }
    }
  };
  const reader = new BinaryReader(bytes);
  try {
    walk(desc, reader, bytes.byteLength, 0);
  } catch (error) {
    if (PlinthError.is(error)) throw error;
    throw new PlinthError("invalid_argument", `the request is not a valid ${desc.typeName}: ${(error as Error).message}`);
  }
  return count;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Counts the values of a JSON text (UTF-8): every `[`, `{`, `,` and `:` outside strings —
 * an upper bound of what decoding it creates. Strings are skipped at native speed
 * (indexOf), so a large `json_text` or base64 field costs next to nothing. Throws
 * INVALID_ARGUMENT past `max` values or MAX_DEPTH levels; text that is not JSON is left
 * to the decoder to refuse.
 */
export function countJsonValues(text: Uint8Array, max: number): number {
  const bytes = Buffer.from(text.buffer, text.byteOffset, text.byteLength);
  let count = 0;
  let depth = 0;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === QUOTE) {
      // To the closing quote: one not preceded by an odd number of backslashes.
      for (;;) {
        const close = bytes.indexOf(QUOTE, i + 1);
        if (close < 0) return count;
        let slashes = 0;
        while (bytes[close - 1 - slashes] === BACKSLASH) slashes++;
        i = close;
        if (slashes % 2 === 0) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      // [ {
      if (++depth > MAX_DEPTH) throw tooDeep();
      if (++count > max) throw tooManyValues(max);
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    } else if (c === 0x2c || c === 0x3a) {
      // , :
      if (++count > max) throw tooManyValues(max);
    }
  }
  return count;
}
