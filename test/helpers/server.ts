/**
 * Starts the real server on 127.0.0.1:0 with real plugin children, and gives real
 * gRPC clients. close() stops it and checks that no child is left.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Channel, createChannel, createClientFactory } from "nice-grpc";
import { deadlineMiddleware } from "nice-grpc-client-middleware-deadline";
import { pino } from "pino";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import { parseConfig } from "../../server/config/load.ts";
import { type PlinthServer, startServer } from "../../server/app.ts";
import { niceDefinition } from "../../server/rpc/service-definition.ts";
import { pluginChildren } from "./processes.ts";
import { tempDir } from "./temp.ts";

export const root = fileURLToPath(new URL("../..", import.meta.url));
export const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/plugins/${name}`, import.meta.url));

export interface TestServer {
  server: PlinthServer;
  port: number;
  channel: Channel;
  engine: ReturnType<typeof engineClient>;
  actions: ReturnType<typeof actionClient>;
  state: ReturnType<typeof stateClient>;
  close(): Promise<void>;
}

// Clients take a `deadline` call option, as grpc clients in other languages do.
const clients = createClientFactory().use(deadlineMiddleware);
const engineClient = (channel: Channel) => clients.create(niceDefinition(EngineService), channel);
const actionClient = (channel: Channel) => clients.create(niceDefinition(ActionService), channel);
const stateClient = (channel: Channel) => clients.create(niceDefinition(StateService), channel);

/**
 * Config as in a YAML file; plugins default to the example plugins, the backend to a
 * SQLite file in a new temporary folder.
 */
export async function startTestServer(config: Record<string, unknown> = {}): Promise<TestServer> {
  const engine = (config.engine ?? {}) as Record<string, unknown>;
  const backend = config.backend ?? { path: join(tempDir(), "plinth.db") };
  const resolved = parseConfig(
    { ...config, backend, server: { address: "127.0.0.1:0" }, engine: { sigterm_timeout: 2, check_children_period: 0.2, ...engine } },
    root,
  );
  const logger = pino({ level: process.env.PLINTH_TEST_LOG ?? "silent" });
  const server = await startServer(resolved, logger);
  // Large payloads come back in full: as large as the server may send.
  const channel = createChannel(`127.0.0.1:${server.port}`, undefined, { "grpc.max_receive_message_length": -1 });
  return {
    server,
    port: server.port,
    channel,
    engine: engineClient(channel),
    actions: actionClient(channel),
    state: stateClient(channel),
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
