/**
 * Our services as nice-grpc definitions, with the server's own encoding: a stream's
 * message is encoded once for all its watchers, a unary answer without a copy of its
 * large fields per nesting level, a request kept as its bytes until the caller is
 * known (raw-request.ts decodes it after authentication), and a paced stream's message
 * unwrapped as grpc-js takes it (stream-pacing.ts).
 */
import { create } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { type NiceDefinition, serviceDefinition } from "../../client/service-definition.ts";
import { encodeBinary } from "../../sdk/worker/encode-chunks.ts";
import { encodeOnce } from "../encoded.ts";
import { RawRequest } from "./raw-request.ts";
import { unwrapPaced } from "./stream-pacing.ts";

export type { NiceDefinition } from "../../client/service-definition.ts";

export function niceDefinition<S extends GenServiceMethods>(service: GenService<S>): NiceDefinition<S> {
  return serviceDefinition(service, {
    responseSerialize: (method) =>
      method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming"
        ? (value) => encodeOnce(method.output, create(method.output, unwrapPaced(value) as never))
        : (value) => encodeBinary(method.output, create(method.output, value as never)),
    requestDeserialize: (method) => (bytes) => new RawRequest(bytes, method.input),
  });
}
