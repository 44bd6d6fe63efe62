/**
 * The gRPC transport: Plinth's three services, health and reflection on one port, with
 * one error mapper around every call. It knows the engine only through its API.
 */
import { HealthImplementation } from "grpc-health-check";
import { createServer } from "nice-grpc";
import type { Logger } from "pino";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.ts";
import { ActionService, file_plinth_v1_action_service } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService, file_plinth_v1_engine_service } from "../../gen/plinth/v1/engine_service_pb.ts";
import { file_plinth_v1_state_service, StateService } from "../../gen/plinth/v1/state_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import { actionService } from "./action-service.ts";
import type { CallStack } from "./call-stack.ts";
import { engineService } from "./engine-service.ts";
import { grpcJsBridge } from "./grpc-js-bridge.ts";
import { addReflection } from "./reflection.ts";
import { niceDefinition } from "./service-definition.ts";
import { stateService } from "./state-service.ts";
import { paceStreams } from "./stream-pacing.ts";
import { type TlsFiles, tlsCredentials } from "./tls.ts";

/** How long connections get to close once no call is in flight. */
const CLOSE_GRACE_MS = 250;

const SERVICES = ["", ...[EngineService, ActionService, StateService].map((s) => s.typeName)];

export interface GrpcServer {
  /** Binds the address, with TLS when configured; resolves with the port (the chosen one for port 0). */
  listen(address: string): Promise<number>;
  /** Reads the TLS files again (SIGHUP): new connections use them, the port stays open. False without TLS. */
  reloadTls(): Promise<boolean>;
  /** What grpc.health.v1 answers for every service. */
  setServing(serving: boolean): void;
  /** Lets the calls in flight finish, for at most `graceMs`, then closes the port. */
  shutdown(graceMs: number): Promise<void>;
}

export interface GrpcOptions {
  maxMessageBytes: number;
  /** Every connection is pinged this often; one that does not answer is closed (one that never sent the HTTP/2 preface too). */
  keepaliveMs: number;
  logger: Logger;
  tls?: TlsFiles | undefined;
  /** Errors, audit, auth and limits: shared with the HTTP listener. */
  stack: CallStack;
}

/** `engine` throws UNAVAILABLE while the engine is not there (starting or stopping). */
export async function createGrpcServer(engine: () => Engine, options: GrpcOptions): Promise<GrpcServer> {
  const tls = options.tls ? await tlsCredentials(options.tls) : undefined;
  // Calls in flight, so that a stop waits for their answers and not for idle connections.
  let inFlight = 0;
  let onIdle: (() => void) | undefined;
  const calls = {
    start: () => inFlight++,
    end: () => {
      if (--inFlight === 0) onIdle?.();
    },
  };
  const server = createServer({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    "grpc.max_send_message_length": options.maxMessageBytes,
    // Node closes a connection that never sent the preface only when destroyed: a ping it
    // cannot answer does that (grpc-js's idle timeout closes gracefully, and waits for it).
    "grpc.keepalive_time_ms": options.keepaliveMs,
    "grpc.keepalive_timeout_ms": Math.min(options.keepaliveMs, 20_000),
  }).use(options.stack.counted(calls));
  server.add(niceDefinition(EngineService), engineService(engine));
  // WatchAction and WatchState: one message at a time per stream, the newer coalescing in their queues.
  server.with(paceStreams).add(niceDefinition(ActionService), actionService(engine));
  server.with(paceStreams).add(niceDefinition(StateService), stateService(engine));
  const health = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, "NOT_SERVING" as const])));
  const bridge = grpcJsBridge(server);
  health.addToServer(bridge);
  addReflection(bridge, [file_plinth_v1_engine_service, file_plinth_v1_action_service, file_plinth_v1_state_service, file_grpc_health_v1_health]);
  return {
    listen: (address) => server.listen(address, tls?.credentials),
    reloadTls: async () => {
      await tls?.reload();
      return tls !== undefined;
    },
    setServing(serving) {
      for (const s of SERVICES) health.setStatus(s, serving ? "SERVING" : "NOT_SERVING");
    },
    async shutdown(graceMs) {
      // The answers of the calls in flight go out (their actions have ended); then every
      // connection closes, idle ones included, without waiting for their clients.
      if (inFlight > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          onIdle = resolve;
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
      }
      // A graceful close lets the last answers flush; idle clients get a moment, not more.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([server.shutdown(), new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS)))]);
      clearTimeout(timer);
      server.forceShutdown();
    },
  };
}
