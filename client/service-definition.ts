/**
 * nice-grpc has no adapter for protobuf-es v2 services: this maps a generated service to
 * a nice-grpc ServiceDefinition, typed so that implementations and clients see the
 * generated message types. The server passes hooks for its own encoding and decoding.
 */
import { create, type DescMethod, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
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

export interface DefinitionHooks {
  /** How a response is encoded (default: toBinary). */
  responseSerialize?: (method: DescMethod) => (value: unknown) => Uint8Array;
  /** How a request is decoded (default: fromBinary). */
  requestDeserialize?: (method: DescMethod) => (bytes: Uint8Array) => unknown;
}

export function serviceDefinition<S extends GenServiceMethods>(service: GenService<S>, hooks: DefinitionHooks = {}): NiceDefinition<S> {
  const definition: Record<string, MethodDefinition<unknown, unknown, unknown, unknown>> = {};
  for (const method of service.methods) {
    const kind = method.methodKind;
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: kind === "client_streaming" || kind === "bidi_streaming",
      responseStream: kind === "server_streaming" || kind === "bidi_streaming",
      requestSerialize: (value) => toBinary(method.input, create(method.input, value as never)),
      requestDeserialize: hooks.requestDeserialize?.(method) ?? ((bytes) => fromBinary(method.input, bytes)),
      responseSerialize: hooks.responseSerialize?.(method) ?? ((value) => toBinary(method.output, create(method.output, value as never))),
      responseDeserialize: (bytes) => fromBinary(method.output, bytes),
      options: method.idempotency ? { idempotencyLevel: method.idempotency === 1 ? "NO_SIDE_EFFECTS" : "IDEMPOTENT" } : {},
    };
  }
  return definition as NiceDefinition<S>;
}
