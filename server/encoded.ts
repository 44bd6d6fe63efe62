/**
 * Encodes a message once, however many times it is sent or measured: a state change
 * goes to every watcher, and pages are cut by encoded size. Messages handed around
 * here are immutable (views and stream messages), so the bytes stay right.
 */
import { type DescMessage, type MessageShape, toBinary, toJsonString } from "@bufbuild/protobuf";

const cache = new WeakMap<object, Uint8Array>();
const jsonCache = new WeakMap<object, Uint8Array>();
const utf8 = new TextEncoder();

export function encodeOnce<S extends DescMessage>(schema: S, message: MessageShape<S>): Uint8Array {
  let bytes = cache.get(message);
  if (!bytes) {
    bytes = toBinary(schema, message);
    cache.set(message, bytes);
  }
  return bytes;
}

export function encodedSize<S extends DescMessage>(schema: S, message: MessageShape<S>): number {
  return encodeOnce(schema, message).byteLength;
}

/** The message's proto3 JSON as UTF-8, made once (Connect's JSON streams). */
export function encodeJsonOnce<S extends DescMessage>(schema: S, message: MessageShape<S>): Uint8Array {
  let bytes = jsonCache.get(message);
  if (!bytes) {
    bytes = utf8.encode(toJsonString(schema, message));
    jsonCache.set(message, bytes);
  }
  return bytes;
}
