/**
 * nice-grpc has no adapter for protobuf-es v2 services: this maps a generated
 * service to a nice-grpc ServiceDefinition, typed so that implementations and
 * clients see the generated message types.
 */
import { create, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { MethodDefinition } from "nice-grpc";
import { encodeBinary } from "../../sdk/worker/encode-chunks.ts";
import { encodeOnce } from "../encoded.ts";

/** Marks a request that did not decode: the error mapper answers INVALID_ARGUMENT. */
export const UNDECODABLE = Symbol.for("plinth.undecodable");

export interface Undecodable {
  [UNDECODABLE]: { type: string; error: Error };
}

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
    const responseSerialize =
      kind === "server_streaming" || kind === "bidi_streaming"
        ? (value: unknown) => encodeOnce(method.output, create(method.output, value as never))
        : (value: unknown) => encodeBinary(method.output, create(method.output, value as never));
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: kind === "client_streaming" || kind === "bidi_streaming",
      responseStream: kind === "server_streaming" || kind === "bidi_streaming",
      requestSerialize: (value) => toBinary(method.input, create(method.input, value as never)),
      // grpc-js answers INTERNAL when this throws; the request is the client's fault.
      requestDeserialize: (bytes): unknown => {
        try {
          return fromBinary(method.input, bytes);
        } catch (error) {
          return { [UNDECODABLE]: { type: method.input.typeName, error: error as Error } } satisfies Undecodable;
        }
      },
      responseSerialize,
      responseDeserialize: (bytes) => fromBinary(method.output, bytes),
      options: method.idempotency ? { idempotencyLevel: method.idempotency === 1 ? "NO_SIDE_EFFECTS" : "IDEMPOTENT" } : {},
    };
  }
  return definition as NiceDefinition<S>;
}
