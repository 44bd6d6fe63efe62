/**
 * Our services as nice-grpc definitions, with the server's own encoding: a stream's
 * message is encoded once for all its watchers, a unary answer without a copy of its
 * large fields per nesting level, and a request that does not decode is marked for the
 * error mapper (INVALID_ARGUMENT) instead of failing inside grpc-js (INTERNAL).
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { type NiceDefinition, serviceDefinition } from "../../client/service-definition.ts";
import { encodeBinary } from "../../sdk/worker/encode-chunks.ts";
import { encodeOnce } from "../encoded.ts";

export type { NiceDefinition } from "../../client/service-definition.ts";

/** Marks a request that did not decode: the error mapper answers INVALID_ARGUMENT. */
export const UNDECODABLE = Symbol.for("plinth.undecodable");

export interface Undecodable {
  [UNDECODABLE]: { type: string; error: Error };
}

export function niceDefinition<S extends GenServiceMethods>(service: GenService<S>): NiceDefinition<S> {
  return serviceDefinition(service, {
    responseSerialize: (method) =>
      method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming"
        ? (value) => encodeOnce(method.output, create(method.output, value as never))
        : (value) => encodeBinary(method.output, create(method.output, value as never)),
    requestDeserialize: (method) => (bytes) => {
      try {
        return fromBinary(method.input, bytes);
      } catch (error) {
        return { [UNDECODABLE]: { type: method.input.typeName, error: error as Error } } satisfies Undecodable;
      }
    },
  });
}
