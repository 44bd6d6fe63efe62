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
import { Code, ConnectError, type ConnectRouter, createContextKey, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { type CallContext, Metadata, ServerError } from "nice-grpc";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import { actionService } from "./action-service.ts";
import type { CallStack } from "./call-stack.ts";
import { engineService } from "./engine-service.ts";
import { stateService } from "./state-service.ts";
import { PEER_SUBJECT, type TlsFiles } from "./tls.ts";

export interface HttpOptions {
  stack: CallStack;
  maxMessageBytes: number;
  /** The gRPC port's certificate and key: the HTTP listener serves HTTPS with them. */
  tls?: TlsFiles | undefined;
  /** Answers what is not an RPC (the dashboard's files); 404 when it returns false. */
  files?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
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

function start(
  service: GenService<GenServiceMethods>,
  method: DescMethod,
  handler: AnyHandler,
  stack: CallStack,
  request: unknown,
  ctx: HandlerContext,
) {
  const responseStream = method.methodKind === "server_streaming";
  // The caller's identity comes from its token only: a certificate's subject is the gRPC
  // port's (mutual TLS), and a header of that name sent here is no proof of anything.
  const metadata = Metadata();
  for (const [key, value] of ctx.requestHeader) if (key !== PEER_SUBJECT && !key.endsWith("-bin")) metadata.set(key, value);
  const context: CallContext = {
    metadata,
    peer: ctx.values.get(PEER),
    header: Metadata(),
    sendHeader() {},
    trailer: Metadata(),
    signal: ctx.signal,
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

function unary(service: GenService<GenServiceMethods>, method: DescMethod, handler: AnyHandler, stack: CallStack) {
  return async (request: unknown, ctx: HandlerContext) => {
    try {
      const calls = start(service, method, handler, stack, request, ctx);
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
      yield* start(service, method, handler, stack, request, ctx);
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

export function createHttpListener(engine: () => Engine, options: HttpOptions): HttpListener {
  const routes = (router: ConnectRouter) => {
    router.service(EngineService, throughStack(EngineService, engineService(engine) as never, options.stack));
    router.service(ActionService, throughStack(ActionService, actionService(engine) as never, options.stack));
    router.service(StateService, throughStack(StateService, stateService(engine) as never, options.stack));
  };
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: options.maxMessageBytes,
    writeMaxBytes: options.maxMessageBytes,
    contextValues: (req) => createContextValues().set(PEER, `${req.socket.remoteAddress}:${req.socket.remotePort}`),
    fallback: (req, res) => {
      void (options.files?.(req as IncomingMessage, res as ServerResponse) ?? Promise.resolve(false)).then((served) => {
        if (served) return;
        res.writeHead(404, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            code: "not_found",
            message: `no such path: ${req.url}; the API is at /plinth.v1.EngineService/<Method>, /plinth.v1.ActionService/<Method> and /plinth.v1.StateService/<Method> (Connect and gRPC-Web)`,
          }),
        );
      });
    },
  });
  let server: HttpServer | HttpsServer;
  const tlsOptions = async (tls: TlsFiles) => ({ cert: await readFile(tls.cert), key: await readFile(tls.key) });
  return {
    async listen(address) {
      server = options.tls ? createHttpsServer(await tlsOptions(options.tls), handler) : createHttpServer(handler);
      const [host, port] = address.split(/:(?=\d+$)/) as [string, string];
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
