/**
 * The HTTP listener: Plinth's three services over the Connect protocol (JSON and binary:
 * curl and browsers) and gRPC-Web, served by connect-node from the same handlers as the
 * gRPC port, through the same call stack (errors, audit, auth, stream limits). Each
 * Connect call is handed to that stack as nice-grpc would hand it a gRPC call.
 */
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { DescMethod } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Code, ConnectError, createConnectRouter, createContextKey, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { readAllBytes, type UniversalHandler } from "@connectrpc/connect/protocol";
import { parseContentType as connectContentType } from "@connectrpc/connect/protocol-connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { type CallContext, Metadata, ServerError } from "nice-grpc";
import type { Logger } from "pino";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import { cut } from "../errors.ts";
import { actionService } from "./action-service.ts";
import { type BrowserOptions, browserRules } from "./browser-rules.ts";
import type { CallStack } from "./call-stack.ts";
import { serveConnectStream } from "./connect-stream.ts";
import { engineService } from "./engine-service.ts";
import { toServerError } from "./error-mapper.ts";
import { ACCEPTED_TYPES, bodyFormat, countBody } from "./http-request-cost.ts";
import { stateService } from "./state-service.ts";
import { PEER_SUBJECT, type TlsFiles } from "./tls.ts";

export interface HttpOptions {
  stack: CallStack;
  logger: Logger;
  maxMessageBytes: number;
  /** The gRPC port's certificate and key: the HTTP listener serves HTTPS with them. */
  tls?: TlsFiles | undefined;
  /** Answers what is not an RPC (the dashboard's files); 404 when it returns false. */
  files?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
  /** http.allowed_hosts and http.cors; the listener's own host comes from its address. */
  browsers?: Omit<BrowserOptions, "listenHost">;
}

export interface HttpListener {
  listen(address: string): Promise<number>;
  reloadTls(): Promise<void>;
  shutdown(graceMs: number): Promise<void>;
}

const PEER = createContextKey("", { description: "the client's address and port" });

// biome-ignore lint/suspicious/noExplicitAny: handlers of every method of every service
type AnyHandler = (request: any, context: CallContext & { caller?: unknown }) => any;

/** A Connect implementation of `service` whose every method goes through `stack`, then `impl`. */
function throughStack<S extends GenServiceMethods>(service: GenService<S>, impl: Record<string, AnyHandler>, stack: CallStack) {
  const methods: Record<string, unknown> = {};
  for (const method of service.methods) {
    const handler = impl[method.localName]!;
    methods[method.localName] =
      method.methodKind === "server_streaming" ? streaming(service, method, handler, stack) : unary(service, method, handler, stack);
  }
  return methods as never;
}

/** What the stack needs of a call besides its request. */
interface CallOrigin {
  headers: Headers;
  peer: string;
  /** Aborted with an AbortError or a TimeoutError (see standardSignal). */
  signal: AbortSignal;
}

function start(
  service: GenService<GenServiceMethods>,
  method: DescMethod,
  handler: AnyHandler,
  stack: CallStack,
  request: unknown,
  origin: CallOrigin,
) {
  const responseStream = method.methodKind === "server_streaming";
  // The caller's identity comes from its token only: a certificate's subject is the gRPC
  // port's (mutual TLS), and a header of that name sent here is no proof of anything.
  const context: CallContext = {
    metadata: metadataOf(origin.headers),
    peer: origin.peer,
    header: Metadata(),
    sendHeader() {},
    trailer: Metadata(),
    signal: origin.signal,
  };
  const call = {
    method: { path: `/${service.typeName}/${method.name}`, requestStream: false, responseStream, options: {} },
    requestStream: false as const,
    request,
    responseStream,
    async *next(req: unknown, next: CallContext) {
      if (responseStream) return yield* handler(req, next) as AsyncIterable<unknown>;
      return await handler(req, next);
    },
  };
  return stack.middleware(call as never, context);
}

/**
 * The call's signal with a reason the stack knows: Connect aborts with a ConnectError
 * (DeadlineExceeded when the client's connect-timeout-ms passed), the stack maps
 * TimeoutError and AbortError.
 */
function standardSignal(signal: AbortSignal): AbortSignal {
  const controller = new AbortController();
  const onAbort = () => {
    const deadline = signal.reason instanceof ConnectError && signal.reason.code === Code.DeadlineExceeded;
    controller.abort(new DOMException(deadline ? "the deadline was exceeded" : "the call was cancelled", deadline ? "TimeoutError" : "AbortError"));
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  return controller.signal;
}

function originOf(ctx: HandlerContext): CallOrigin {
  return { headers: ctx.requestHeader, peer: ctx.values.get(PEER), signal: standardSignal(ctx.signal) };
}

function unary(service: GenService<GenServiceMethods>, method: DescMethod, handler: AnyHandler, stack: CallStack) {
  return async (request: unknown, ctx: HandlerContext) => {
    try {
      const calls = start(service, method, handler, stack, request, originOf(ctx));
      for (;;) {
        const step = await calls.next();
        if (step.done) return step.value;
      }
    } catch (error) {
      throw connectError(error);
    }
  };
}

function streaming(service: GenService<GenServiceMethods>, method: DescMethod, handler: AnyHandler, stack: CallStack) {
  return async function* stream(request: unknown, ctx: HandlerContext) {
    try {
      yield* start(service, method, handler, stack, request, originOf(ctx));
    } catch (error) {
      throw connectError(error);
    }
  };
}

/** The stack's errors are gRPC statuses; Connect's codes are the same numbers. */
function connectError(error: unknown): ConnectError {
  if (error instanceof ServerError) return new ConnectError(error.details, error.code as number as Code);
  return ConnectError.from(error, Code.Internal);
}

/** The headers as the stack reads them: a certificate's subject is the gRPC port's alone, and binary headers are not ours. */
function metadataOf(headers: Headers): Metadata {
  const metadata = Metadata();
  for (const [key, value] of headers) if (key !== PEER_SUBJECT && !key.endsWith("-bin")) metadata.set(key, value);
  return metadata;
}

const peerOf = (req: IncomingMessage) => `${req.socket.remoteAddress}:${req.socket.remotePort}`;

/** A Connect server stream's request (not gRPC-Web's): JSON or binary. */
function connectStreamType(headers: Headers): { json: boolean } | undefined {
  const type = connectContentType(headers.get("content-type") ?? "");
  return type?.stream ? { json: !type.binary } : undefined;
}

/** An answer in Connect's error form, the connection closed when the request's body was not read. */
function answer(res: ServerResponse, status: number, code: string, message: string): void {
  const unread = !res.req.readableEnded;
  res.writeHead(status, { "content-type": "application/json", ...(unread ? { connection: "close" } : {}) });
  res.end(JSON.stringify({ code, message }));
}

export function createHttpListener(engine: () => Engine, options: HttpOptions): HttpListener {
  const { stack, logger } = options;
  const router = createConnectRouter({
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    // A misspelled field or enum name (a status filter) is an error, not silently nothing.
    jsonOptions: { ignoreUnknownFields: false },
  });
  const impls: [GenService<GenServiceMethods>, object][] = [
    [EngineService as GenService<GenServiceMethods>, engineService(engine)],
    [ActionService as GenService<GenServiceMethods>, actionService(engine)],
    [StateService as GenService<GenServiceMethods>, stateService(engine)],
  ];
  const handlers = new Map<string, AnyHandler>();
  for (const [service, impl] of impls) {
    router.service(service, throughStack(service, impl as never, stack));
    for (const method of service.methods)
      handlers.set(`/${service.typeName}/${method.name}`, (impl as Record<string, AnyHandler>)[method.localName]!);
  }
  const rpcs = new Map(router.handlers.map((h) => [h.requestPath, h]));

  /** An RPC: the caller checked on the headers, then the body's cost, before Connect decodes it. */
  async function call(rpc: UniversalHandler, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = rpc.requestPath;
    if (!req.headers.host) return answer(res, 400, "invalid_argument", "the request has no Host header");
    const uReq = universalRequestFromNodeRequest(req, res, undefined, createContextValues().set(PEER, peerOf(req)));
    if (req.method === "POST" && !bodyFormat(uReq.header)) {
      const type = uReq.header.get("content-type");
      return answer(res, 415, "invalid_argument", `${type ? `content-type ${cut(type)}` : "no content-type"}: send ${ACCEPTED_TYPES}`);
    }
    /** The body once the caller is admitted and its cost counted; throws what Connect should answer. */
    const admittedBody = async (): Promise<Uint8Array> => {
      try {
        stack.admit(path, metadataOf(uReq.header));
      } catch (error) {
        // The body stays unread: the connection cannot carry another request.
        res.setHeader("connection", "close");
        throw connectError(toServerError(error, logger, path));
      }
      const bytes = await readAllBytes(uReq.body as AsyncIterable<Uint8Array>, options.maxMessageBytes, uReq.header.get("content-length"));
      const format = bodyFormat(uReq.header);
      if (format) {
        try {
          await countBody(bytes, format, rpc.method.input, stack.maxRequestValues, options.maxMessageBytes);
        } catch (error) {
          throw connectError(toServerError(error, logger, path));
        }
      }
      return bytes;
    };
    const stream = rpc.method.methodKind === "server_streaming" ? connectStreamType(uReq.header) : undefined;
    if (stream) {
      const service = impls.find(([s]) => s.typeName === rpc.service.typeName)![0];
      const handler = handlers.get(path)!;
      return serveConnectStream(res, {
        method: rpc.method,
        json: stream.json,
        headers: uReq.header,
        body: admittedBody,
        run: (request, signal) => start(service, rpc.method, handler, stack, request, { headers: uReq.header, peer: peerOf(req), signal }),
        toConnectError: (error) => connectError(error instanceof ConnectError ? error : toServerError(error, logger, path)),
        readMaxBytes: options.maxMessageBytes,
      });
    }
    const uRes = await rpc({
      ...uReq,
      body: (async function* () {
        yield await admittedBody();
      })(),
    });
    await universalResponseToNodeResponse(uRes, res);
  }

  /** What is not an RPC: the dashboard's files, or a 404 that says where the API is. */
  async function other(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (await options.files?.(req, res)) return;
    answer(
      res,
      404,
      "not_found",
      `no such path: ${cut(req.url ?? "")}; the API is at /plinth.v1.EngineService/<Method>, /plinth.v1.ActionService/<Method> and /plinth.v1.StateService/<Method> (Connect and gRPC-Web)`,
    );
  }

  let rules: ReturnType<typeof browserRules> | undefined;
  // Whatever a request holds, it is answered: no rejection is left unhandled.
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    if (rules?.check(req, res, (status, code, message) => answer(res, status, code, message))) return;
    const rpc = rpcs.get((req.url ?? "").split("?", 1)[0]!);
    (rpc ? call(rpc, req, res) : other(req, res)).catch((error: unknown) => {
      if (ConnectError.from(error).code === Code.Aborted) return;
      logger.warn({ err: error, url: cut(req.url ?? "") }, "an HTTP request failed");
      if (res.headersSent) res.destroy();
      else answer(res, 400, "invalid_argument", `the request could not be read: ${cut((error as Error).message ?? String(error))}`);
    });
  };
  let server: HttpServer | HttpsServer;
  const tlsOptions = async (tls: TlsFiles) => ({ cert: await readFile(tls.cert), key: await readFile(tls.key) });
  return {
    async listen(address) {
      server = options.tls ? createHttpsServer(await tlsOptions(options.tls), handler) : createHttpServer(handler);
      const [host, port] = address.split(/:(?=\d+$)/) as [string, string];
      rules = browserRules({ listenHost: host, allowedHosts: [], corsOrigins: [], corsCredentials: false, ...options.browsers });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(Number(port), host.replace(/^\[|\]$/g, ""), () => resolve());
      });
      return (server.address() as { port: number }).port;
    },
    async reloadTls() {
      if (options.tls && "setSecureContext" in server) server.setSecureContext(await tlsOptions(options.tls));
    },
    async shutdown(graceMs) {
      if (!server) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
    },
  };
}
