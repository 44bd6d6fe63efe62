/**
 * Requests decoded after the caller is known. grpc-js hands the server a request's bytes
 * before any middleware runs; every service's definition on the gRPC port keeps them as a
 * RawRequest, and the call stack — once the caller is authorized (call-stack.ts) — counts
 * what decoding would cost (request-cost.ts), then decodes. So a caller without a token
 * never makes the server decode anything, no caller makes it decode more than the limit
 * allows, and bytes that do not decode are INVALID_ARGUMENT, whichever service they were for.
 */
import { type DescMessage, fromBinary } from "@bufbuild/protobuf";
import { PlinthError } from "../errors.ts";
import { countBinaryValues } from "./request-cost.ts";

const RAW = Symbol.for("plinth.rawRequest");

export class RawRequest {
  readonly [RAW] = true;
  readonly bytes: Uint8Array;
  /** What the bytes should be, for messages: "plinth.v1.PredictRequest". */
  readonly typeName: string;
  readonly #decode: (bytes: Uint8Array) => unknown;
  /** Our own messages' values are counted first; a library's (health, reflection) are small by nature. */
  readonly #type: DescMessage | undefined;
  /** The message once decoded: what the audit line reads its ids from. */
  decoded: unknown;

  constructor(bytes: Uint8Array, type: DescMessage | { typeName: string; decode: (bytes: Uint8Array) => unknown }) {
    this.bytes = bytes;
    this.typeName = type.typeName;
    if ("kind" in type) {
      this.#type = type;
      this.#decode = (b) => fromBinary(type, b);
    } else {
      this.#type = undefined;
      this.#decode = type.decode;
    }
  }

  static is(value: unknown): value is RawRequest {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[RAW] === true;
  }

  /** Counts, then decodes; INVALID_ARGUMENT when over `maxValues` or not a valid message. */
  decode(maxValues: number): unknown {
    if (this.#type) countBinaryValues(this.#type, this.bytes, maxValues);
    try {
      this.decoded = this.#decode(this.bytes);
    } catch (error) {
      throw new PlinthError("invalid_argument", `the request is not a valid ${this.typeName}: ${(error as Error).message}`);
    }
    return this.decoded;
  }
}

/** The request as its handler sees it: decoded when it came raw (undefined while not yet). */
export function decodedRequest(request: unknown): unknown {
  return RawRequest.is(request) ? request.decoded : request;
}
