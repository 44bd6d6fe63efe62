/**
 * Starts the real server on 127.0.0.1:0 with real plugin children, and gives real
 * gRPC clients. close() stops it and checks that no child is left.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Channel, type ChannelCredentials, type ClientMiddleware, createChannel, createClientFactory, Metadata } from "nice-grpc";
import { deadlineMiddleware } from "nice-grpc-client-middleware-deadline";
import { type Logger, pino } from "pino";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import { type PlinthServer, startServer } from "../../server/app.ts";
import { parseConfig } from "../../server/config/load.ts";
import { niceDefinition } from "../../server/rpc/service-definition.ts";
import { pluginChildren } from "./processes.ts";
import { tempDir } from "./temp.ts";

export const root = fileURLToPath(new URL("../..", import.meta.url));
export const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/plugins/${name}`, import.meta.url));

export interface TestServer {
  server: PlinthServer;
  port: number;
  channel: Channel;
  engine: ReturnType<typeof clientsOf>["engine"];
  actions: ReturnType<typeof clientsOf>["actions"];
  state: ReturnType<typeof clientsOf>["state"];
  close(): Promise<void>;
}

/** Sends `authorization: Bearer <token>` on every call. */
const bearer = (token: string): ClientMiddleware =>
  async function* withToken(call, options) {
    return yield* call.next(call.request, { ...options, metadata: Metadata(options.metadata).set("authorization", `Bearer ${token}`) });
  };

/** Our three services' clients on `channel`; they take a `deadline` call option, as grpc clients in other languages do. */
export function clientsOf(channel: Channel, token?: string) {
  const factory = token ? createClientFactory().use(deadlineMiddleware).use(bearer(token)) : createClientFactory().use(deadlineMiddleware);
  return {
    engine: factory.create(niceDefinition(EngineService), channel),
    actions: factory.create(niceDefinition(ActionService), channel),
    state: factory.create(niceDefinition(StateService), channel),
  };
}

/**
 * Config as in a YAML file; plugins default to the example plugins, the backend to a
 * SQLite file in a new temporary folder.
 */
export interface TestServerOptions {
  logger?: Logger;
  /** What the default clients send as their bearer token. */
  token?: string;
  /** How the default clients connect (TLS), and to which host name. */
  credentials?: ChannelCredentials;
  host?: string;
}

export async function startTestServer(config: Record<string, unknown> = {}, options: TestServerOptions = {}): Promise<TestServer> {
  const engine = (config.engine ?? {}) as Record<string, unknown>;
  const backend = config.backend ?? { path: join(tempDir(), "plinth.db") };
  const resolved = parseConfig(
    {
      ...config,
      backend,
      server: { address: "127.0.0.1:0", ...(config.server ?? {}) },
      // No idle child kept ready unless a test asks: a spare child per server, started and
      // never used, is CPU the other tests on two cores wait for.
      engine: { sigterm_timeout: 2, check_children_period: 0.2, min_idle_workers: 0, ...engine },
    },
    root,
  );
  const logger = options.logger ?? pino({ level: process.env.PLINTH_TEST_LOG ?? "silent" });
  const server = await startServer(resolved, logger);
  // Large payloads come back in full: as large as the server may send.
  const channel = createChannel(`${options.host ?? "127.0.0.1"}:${server.port}`, options.credentials, { "grpc.max_receive_message_length": -1 });
  return {
    server,
    port: server.port,
    channel,
    ...clientsOf(channel, options.token),
    async close() {
      channel.close();
      await server.close();
      const left = pluginChildren(process.pid);
      if (server.processes.live !== 0 || left.length > 0) {
        throw new Error(`children left after close: manager counts ${server.processes.live}, OS shows ${JSON.stringify(left)}`);
      }
    },
  };
}

/** A server with the payloads fixture, and a model of each of its types. */
export async function startPayloadServer(engine: Record<string, unknown> = {}, backend?: Record<string, unknown>) {
  const t = await startTestServer({ engine, ...(backend ? { backend } : {}), plugins: [{ module: fixture("payloads.ts") }] });
  const model = async (modelType: string) => (await t.engine.createInstance({ modelType, wait: true })).action!.modelId;
  return { t, echo: await model("payloads.Echo"), numbersModel: await model("payloads.Numbers") };
}
