/**
 * nice-grpc has no adapter for protobuf-es v2 services: this maps a generated
 * service to a nice-grpc ServiceDefinition, typed so that implementations and
 * clients see the generated message types.
 */
import { create, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { MethodDefinition } from "nice-grpc";

type Streams<Kind, Side extends "request" | "response"> = Kind extends "bidi_streaming"
  ? true
  : Kind extends (Side extends "request" ? "client_streaming" : "server_streaming")
    ? true
    : false;

export type NiceDefinition<S extends GenServiceMethods> = {
  [K in keyof S]: MethodDefinition<
    MessageInitShape<S[K]["input"]>,
    MessageShape<S[K]["input"]>,
    MessageInitShape<S[K]["output"]>,
    MessageShape<S[K]["output"]>,
    Streams<S[K]["methodKind"], "request">,
    Streams<S[K]["methodKind"], "response">
  >;
};

export function niceDefinition<S extends GenServiceMethods>(service: GenService<S>): NiceDefinition<S> {
  const definition: Record<string, MethodDefinition<unknown, unknown, unknown, unknown>> = {};
  for (const method of service.methods) {
    const kind = method.methodKind;
    // A stream may send the same message object to many clients (a state change to
    // every watcher): encode it once.
    const encoded = new WeakMap<object, Uint8Array>();
    const encode = (value: unknown) => toBinary(method.output, create(method.output, value as never));
    const responseSerialize =
      kind === "server_streaming" || kind === "bidi_streaming"
        ? (value: unknown) => {
            if (typeof value !== "object" || value === null) return encode(value);
            let bytes = encoded.get(value);
            if (!bytes) encoded.set(value, (bytes = encode(value)));
            return bytes;
          }
        : encode;
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: kind === "client_streaming" || kind === "bidi_streaming",
      responseStream: kind === "server_streaming" || kind === "bidi_streaming",
      requestSerialize: (value) => toBinary(method.input, create(method.input, value as never)),
      requestDeserialize: (bytes) => fromBinary(method.input, bytes),
      responseSerialize,
      responseDeserialize: (bytes) => fromBinary(method.output, bytes),
      options: method.idempotency ? { idempotencyLevel: method.idempotency === 1 ? "NO_SIDE_EFFECTS" : "IDEMPOTENT" } : {},
    };
  }
  return definition as NiceDefinition<S>;
}
