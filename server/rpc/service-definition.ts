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
        : (value) => asWhole(encodeBinary(method.output, create(method.output, value as never))),
    requestDeserialize: (method) => (bytes) => new RawRequest(bytes, method.input),
  });
}

/**
 * nice-grpc hands grpc-js `Buffer.from(answer)`: of a Uint8Array that is a copy (1 MB for a
 * 1 MB tensor, on top of grpc-js's own copy into its frame), of an ArrayBuffer a view. So
 * an answer that fills its ArrayBuffer goes as that (typed as what nice-grpc expects).
 */
function asWhole(bytes: Uint8Array): Uint8Array {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.byteLength >= WHOLE_FROM_BYTES;
  return whole ? (bytes.buffer as unknown as Uint8Array) : bytes;
}

/** Below this an answer's copy costs less than it is worth a look (Buffer.from copies small ones into its pool). */
const WHOLE_FROM_BYTES = 64 * 1024;
