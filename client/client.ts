/**
 * A Plinth client over gRPC (nice-grpc): the three services as they are, and helpers
 * that hide the action protocol — start a call, follow its progress, get its result as
 * plain values, cancel it with an AbortSignal.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  type Channel,
  ChannelCredentials,
  type ClientMiddleware,
  createChannel,
  createClientFactory,
  Metadata,
  type Client as NiceClient,
} from "nice-grpc";
import type { Action } from "../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import type { JsonValue } from "../sdk/mod.ts";
import { type ActionRun, followAction, progressOf } from "./action-run.ts";
import { serviceDefinition } from "./service-definition.ts";
import { type ArgValue, fromArg, type ResultValue, toArg } from "./values.ts";

export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** TLS: the CA that signed the server's certificate (PEM); with cert and key, mutual TLS. */
  tls?: { ca?: Uint8Array; cert?: Uint8Array; key?: Uint8Array };
  /** grpc-js channel options; the largest answer defaults to unlimited. */
  channelOptions?: Record<string, unknown>;
  /** nice-grpc client middleware for every call (tracing, logging, deadlines), after the token's. */
  middleware?: ClientMiddleware[];
}

/** The arguments and options of a create, fit or predict. */
export interface CallInput {
  args?: readonly ArgValue[];
  kwargs?: Readonly<Record<string, ArgValue>>;
  /** Seconds: past it the plugin is stopped and the action fails with deadline_exceeded. */
  timeoutSeconds?: number;
  /**
   * Makes the call idempotent: sent again with the same id (a retry after a network error,
   * say), it answers with the first call's action and runs nothing twice.
   */
  requestId?: string;
  /** 1 (highest) to 5; default 3. Among the calls waiting for a child, a higher priority goes first. */
  priority?: number;
  /**
   * Runs a failed call again (RetryPolicy): `maxAttempts` in all, waiting
   * `initialIntervalSeconds` (1) before the second, `backoffCoefficient` (2) times longer
   * before each next one, at most `maximumIntervalSeconds` (100 × the first); a failure
   * with one of `nonRetryableErrorCodes` ends it at once. Over the plugin's own policy.
   */
  retry?: RetryInput;
  /** Aborting it cancels the action (CancelAction). */
  signal?: AbortSignal;
}

export interface RetryInput {
  maxAttempts: number;
  initialIntervalSeconds?: number;
  backoffCoefficient?: number;
  maximumIntervalSeconds?: number;
  nonRetryableErrorCodes?: string[];
}

export interface ModelResult {
  modelId: string;
  revision: bigint;
  /** The plugin's last report, e.g. { accuracy: 0.98 }. */
  state: JsonValue | undefined;
  action: Action;
}

export interface PredictResult {
  prediction: ResultValue | undefined;
  /** The model's revision after the call (a predict may store a new one). */
  revision: bigint | undefined;
  action: Action;
}

const definitions = {
  engine: serviceDefinition(EngineService),
  actions: serviceDefinition(ActionService),
  state: serviceDefinition(StateService),
};

export type EngineClient = NiceClient<typeof definitions.engine>;
export type ActionClient = NiceClient<typeof definitions.actions>;
export type StateClient = NiceClient<typeof definitions.state>;

export interface PlinthClient {
  readonly engine: EngineClient;
  readonly actions: ActionClient;
  readonly state: StateClient;
  create(modelType: string, input?: CallInput): ActionRun<ModelResult>;
  fit(modelId: string, input?: CallInput): ActionRun<ModelResult>;
  predict(modelId: string, input?: CallInput): ActionRun<PredictResult>;
  close(): void;
}

const bearer = (token: string): ClientMiddleware =>
  async function* withToken(call, options) {
    return yield* call.next(call.request, { ...options, metadata: Metadata(options.metadata).set("authorization", `Bearer ${token}`) });
  };

function request(input: CallInput) {
  return {
    args: (input.args ?? []).map((a, i) => toArg(a, `args[${i}]`)),
    kwargs: Object.fromEntries(Object.entries(input.kwargs ?? {}).map(([k, v]) => [k, toArg(v, `kwargs.${k}`)])),
    ...(input.timeoutSeconds !== undefined ? { timeout: durationFromMs(input.timeoutSeconds * 1000) } : {}),
    ...(input.requestId ? { requestId: input.requestId } : {}),
    ...(input.priority !== undefined ? { priority: input.priority } : {}),
    ...(input.retry ? { retry: retryPolicy(input.retry) } : {}),
  };
}

function retryPolicy(retry: RetryInput) {
  const seconds = (s: number | undefined) => (s === undefined ? {} : durationFromMs(s * 1000));
  return {
    maxAttempts: retry.maxAttempts,
    ...(retry.initialIntervalSeconds !== undefined ? { initialInterval: seconds(retry.initialIntervalSeconds) } : {}),
    backoffCoefficient: retry.backoffCoefficient ?? 0,
    ...(retry.maximumIntervalSeconds !== undefined ? { maximumInterval: seconds(retry.maximumIntervalSeconds) } : {}),
    nonRetryableErrorCodes: retry.nonRetryableErrorCodes ?? [],
  };
}

function modelResult(action: Action): ModelResult {
  return { modelId: action.modelId, revision: action.result?.model?.revision ?? 0n, state: progressOf(action).state, action };
}

/**
 * A client for the Plinth server at `address` (host:port).
 *
 * @example
 * ```ts
 * const client = createPlinthClient("127.0.0.1:50051");
 * const { modelId } = await client.create("iris.DecisionTree").done;
 * const run = client.fit(modelId, { args: [dataAccess("iris.inputs"), dataAccess("iris.outputs")] });
 * for await (const p of run.progress) console.log(p.status, p.state);
 * const { state } = await run.done; // { phase: "done", accuracy: 0.98, … }
 * const { prediction } = await client.predict(modelId, { args: [[[5.1, 3.5, 1.4, 0.2]]] }).done;
 * client.close();
 * ```
 */
export function createPlinthClient(address: string, options: ClientOptions = {}): PlinthClient {
  const credentials = options.tls
    ? ChannelCredentials.createSsl(
        options.tls.ca ? Buffer.from(options.tls.ca) : null,
        options.tls.key ? Buffer.from(options.tls.key) : null,
        options.tls.cert ? Buffer.from(options.tls.cert) : null,
      )
    : undefined;
  const channel: Channel = createChannel(address, credentials, { "grpc.max_receive_message_length": -1, ...options.channelOptions });
  let factory = options.token ? createClientFactory().use(bearer(options.token)) : createClientFactory();
  for (const middleware of options.middleware ?? []) factory = factory.use(middleware);
  const engine = factory.create(definitions.engine, channel);
  const actions = factory.create(definitions.actions, channel);
  const state = factory.create(definitions.state, channel);
  return {
    engine,
    actions,
    state,
    create(modelType, input = {}) {
      const send = (wait: boolean) => engine.createInstance({ modelType, ...request(input), wait }).then((r) => r.action!);
      return followAction(actions, send, modelResult, input.signal);
    },
    fit(modelId, input = {}) {
      const send = (wait: boolean) => engine.fit({ modelId, ...request(input), wait }).then((r) => r.action!);
      return followAction(actions, send, modelResult, input.signal);
    },
    predict(modelId, input = {}) {
      const send = (wait: boolean) => engine.predict({ modelId, ...request(input), wait }).then((r) => r.action!);
      return followAction(
        actions,
        send,
        (action) => ({ prediction: fromArg(action.result?.prediction), revision: action.result?.model?.revision, action }),
        input.signal,
      );
    },
    close: () => channel.close(),
  };
}
