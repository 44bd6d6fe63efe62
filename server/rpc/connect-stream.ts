/**
 * Server streams (WatchState, WatchAction) over the Connect protocol, written here rather
 * than by connect-es: connect-es encodes each message once per stream, and one change goes
 * to every watcher — a hundred dashboards cost a hundred encodings of it, and a watcher that
 * stops reading is sent megabytes before its socket pushes back. Here a message is encoded
 * once for every stream (encodeOnce, encodeJsonOnce: the watchers share their messages),
 * and each stream writes those bytes as its socket drains, one message a turn of the event
 * loop (the changes that come meanwhile coalesce in the watch queue). The protocol's pieces are
 * connect-es's own (envelopes, timeouts, end of stream, error JSON); gRPC-Web streams are
 * still connect-es's.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { setImmediate } from "node:timers/promises";
import { promisify } from "node:util";
import { brotliDecompress, gunzip } from "node:zlib";
import { create, type DescMethod, fromBinary, fromJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { createEndStreamSerialization, endStreamFlag, parseTimeout } from "@connectrpc/connect/protocol-connect";
import { encodeJsonOnce, encodeOnce } from "../encoded.ts";

const inflate: Record<string, (bytes: Uint8Array, options: { maxOutputLength: number }) => Promise<Buffer>> = {
  gzip: promisify(gunzip),
  br: promisify(brotliDecompress),
};

const endStream = createEndStreamSerialization(undefined);

export interface ConnectStream {
  method: DescMethod;
  json: boolean;
  headers: Headers;
  /** The request body, read whole (its caller known, its cost counted). */
  body: () => Promise<Uint8Array>;
  /** The stream's messages, through the call stack; `signal` ends it (the client left, its deadline passed). */
  run(request: unknown, signal: AbortSignal): AsyncIterable<unknown>;
  /** What an error becomes on the wire. */
  toConnectError(error: unknown): ConnectError;
  readMaxBytes: number;
}

/** Serves one Connect server stream on `res`; resolves once it has ended. */
export async function serveConnectStream(res: ServerResponse, stream: ConnectStream): Promise<void> {
  const controller = new AbortController();
  const onClose = () => controller.abort(new DOMException("the client went away", "AbortError"));
  res.once("close", onClose);
  let timer: ReturnType<typeof setTimeout> | undefined;
  res.writeHead(200, { "content-type": stream.json ? "application/connect+json" : "application/connect+proto" });
  let error: ConnectError | undefined;
  try {
    const timeout = parseTimeout(stream.headers.get("connect-timeout-ms"), Number.POSITIVE_INFINITY);
    if (timeout.error) throw timeout.error;
    if (timeout.timeoutMs !== undefined) {
      timer = setTimeout(() => controller.abort(new DOMException("the deadline was exceeded", "TimeoutError")), timeout.timeoutMs);
    }
    const request = await readRequest(stream);
    const { output } = stream.method;
    for await (const value of stream.run(request, controller.signal)) {
      // A shared message (WatchState's) stays itself, and its bytes are made once.
      const message = create(output, value as never);
      const bytes = stream.json ? encodeJsonOnce(output, message) : encodeOnce(output, message);
      if (!res.write(encodeEnvelope(0, bytes))) await once(res, "drain", { signal: controller.signal });
      // One message a turn of the event loop, as a gRPC stream sends (stream-pacing.ts): the
      // socket takes megabytes before it pushes back, and meanwhile the changes that come
      // coalesce in the watch queue instead of flooding a client that reads slower.
      await setImmediate();
    }
    // A watch ends quietly when its signal aborts: the deadline still has to be said.
    controller.signal.throwIfAborted();
  } catch (e) {
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : e;
    error = (reason as Error | undefined)?.name === "AbortError" && controller.signal.aborted ? undefined : stream.toConnectError(reason);
  } finally {
    clearTimeout(timer);
    res.off("close", onClose);
  }
  if (res.destroyed) return;
  res.end(encodeEnvelope(endStreamFlag, endStream.serialize({ metadata: new Headers(), ...(error ? { error } : {}) })));
}

/** The one request message of a server stream: an envelope, perhaps compressed. */
async function readRequest(stream: ConnectStream): Promise<unknown> {
  const body = await stream.body();
  if (body.byteLength < 5) throw new ConnectError("the request must be one enveloped message", Code.InvalidArgument);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const flags = view.getUint8(0);
  const length = view.getUint32(1);
  let data: Uint8Array = body.subarray(5, 5 + length);
  if (data.byteLength !== length) throw new ConnectError("the request's envelope is cut short", Code.InvalidArgument);
  if (flags & 0x01) {
    const encoding = stream.headers.get("connect-content-encoding") ?? "";
    const decompress = inflate[encoding];
    if (!decompress)
      throw new ConnectError(`connect-content-encoding ${encoding || "(none)"} is not one this server takes: gzip or br`, Code.Unimplemented);
    data = await decompress(data, { maxOutputLength: stream.readMaxBytes }).catch((e: Error) => {
      throw new ConnectError(`the request does not decompress: ${e.message}`, Code.InvalidArgument);
    });
  }
  const { input } = stream.method;
  try {
    return stream.json ? fromJsonString(input, new TextDecoder().decode(data), { ignoreUnknownFields: false }) : fromBinary(input, data);
  } catch (e) {
    throw new ConnectError(`the request is not a valid ${input.typeName}: ${(e as Error).message}`, Code.InvalidArgument);
  }
}
