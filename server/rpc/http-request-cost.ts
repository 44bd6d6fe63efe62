/**
 * The cost of a Connect or gRPC-Web request body, counted before Connect decodes it (the
 * gRPC port's requests: raw-request.ts). The body is read whole (up to readMaxBytes, as
 * Connect would), decompressed off the event loop when it came compressed, and its values
 * counted in its own format: JSON text, or protobuf binary, each message of an enveloped
 * stream on its own. A body whose framing is broken is passed on as it came: Connect
 * answers it as it would.
 */
import { promisify } from "node:util";
import { brotliDecompress, gunzip } from "node:zlib";
import type { DescMessage } from "@bufbuild/protobuf";
import { parseContentType as connectContentType } from "@connectrpc/connect/protocol-connect";
import { parseContentType as grpcWebContentType } from "@connectrpc/connect/protocol-grpc-web";
import { countBinaryValues, countJsonValues } from "./request-cost.ts";

const inflate: Record<string, (bytes: Uint8Array, options: { maxOutputLength: number }) => Promise<Buffer>> = {
  gzip: promisify(gunzip),
  br: promisify(brotliDecompress),
};

/** The formats this listener takes, for a 415's message. */
export const ACCEPTED_TYPES =
  "application/json (Connect, e.g. curl -H 'content-type: application/json' -d '{}'), application/proto, application/connect+json, application/connect+proto, application/grpc-web+proto or application/grpc-web+json";

export interface BodyFormat {
  json: boolean;
  enveloped: boolean;
  /** The compression its messages came with (gzip, br), or "". */
  encoding: string;
}

/** How a body of these headers is framed; undefined when neither Connect nor gRPC-Web takes its content type. */
export function bodyFormat(headers: Headers): BodyFormat | undefined {
  const type = headers.get("content-type") ?? "";
  const connect = connectContentType(type);
  if (connect) {
    return {
      json: !connect.binary,
      enveloped: connect.stream,
      encoding: (connect.stream ? headers.get("connect-content-encoding") : headers.get("content-encoding")) ?? "",
    };
  }
  const grpcWeb = grpcWebContentType(type);
  if (grpcWeb && !grpcWeb.text) return { json: !grpcWeb.binary, enveloped: true, encoding: headers.get("grpc-encoding") ?? "" };
  return undefined;
}

/** Throws INVALID_ARGUMENT when a message of the body holds more than `maxValues` values. */
export async function countBody(body: Uint8Array, format: BodyFormat, input: DescMessage, maxValues: number, readMaxBytes: number): Promise<void> {
  const count = async (message: Uint8Array, compressed: boolean) => {
    let bytes = message;
    if (compressed) {
      const decompress = inflate[format.encoding];
      // Connect refuses what it cannot decompress (or what grows past readMaxBytes).
      if (!decompress) return;
      try {
        bytes = await decompress(message, { maxOutputLength: readMaxBytes });
      } catch {
        return;
      }
    }
    if (format.json) countJsonValues(bytes, maxValues);
    else countBinaryValues(input, bytes, maxValues);
  };
  if (!format.enveloped) return count(body, format.encoding !== "" && format.encoding !== "identity");
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  for (let at = 0; at + 5 <= body.byteLength; ) {
    const flags = view.getUint8(at);
    const length = view.getUint32(at + 1);
    const end = at + 5 + length;
    if (end > body.byteLength) return;
    // 0x02: Connect's end-of-stream message; 0x80: gRPC-Web's trailers. Neither is a request message.
    if ((flags & 0x82) === 0) await count(body.subarray(at + 5, end), (flags & 0x01) !== 0);
    at = end;
  }
}
