/**
 * One hostile client for bench/hostile.ts, in a process of its own so that its work (8 MiB
 * bodies, 200 sockets) never delays the parent's health probe:
 * `attacker.ts <attack> <grpc port> <http port> <token>`. Sends "ready" once attacking,
 * and stops at the parent's "stop".
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { PredictRequestSchema } from "../gen/plinth/v1/engine_service_pb.ts";

const [attack, grpcPort, httpPort, token] = process.argv.slice(2) as [string, string, string, string];
const controller = new AbortController();
const { signal } = controller;

/** 8 MiB of JSON text: 2.3M numbers in one `json` argument. */
const jsonBody = () => Buffer.from(`{"model_id": "m-none", "args": [{"json": [${"1.5,".repeat(2_300_000 - 1)}1.5]}]}`);

/** 16.8 MB of binary gRPC: 1.6M numbers in one `json` argument. */
function binaryBody(): Uint8Array {
  const values = Array.from({ length: 1_600_000 }, () => create(ValueSchema, { kind: { case: "numberValue", value: 1.5 } }));
  const json = create(ValueSchema, { kind: { case: "listValue", value: { values } } });
  return toBinary(PredictRequestSchema, create(PredictRequestSchema, { modelId: "m-none", args: [{ kind: { case: "json", value: json } }] }));
}

/** `body` to Predict over Connect JSON, again and again, one at a time. */
async function floodConnect(headers: Record<string, string>): Promise<void> {
  const body = jsonBody();
  process.send!("ready");
  while (!signal.aborted) {
    await fetch(`http://127.0.0.1:${httpPort}/plinth.v1.EngineService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
      signal,
    })
      .then((r) => r.arrayBuffer())
      .catch(() => undefined);
  }
}

async function floodGrpc(): Promise<void> {
  const body = Buffer.from(binaryBody());
  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), { "grpc.max_send_message_length": -1 });
  process.send!("ready");
  while (!signal.aborted) {
    await new Promise<void>((resolve) => {
      const call = client.makeUnaryRequest(
        "/plinth.v1.EngineService/Predict",
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        () => resolve(),
      );
      signal.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }
  client.close();
}

/** 200 Connect WatchState streams that never read what they are sent. */
async function stuckWatchers(): Promise<void> {
  const body = Buffer.concat([Buffer.from([0, 0, 0, 0, 2]), Buffer.from("{}")]);
  const sockets: Socket[] = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const socket = connect(Number(httpPort), "127.0.0.1");
      await once(socket, "connect");
      socket.on("error", () => {});
      socket.write(
        `POST /plinth.v1.StateService/WatchState HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      socket.write(body);
      socket.pause();
      return socket;
    }),
  );
  process.send!("ready");
  await once(signal, "abort");
  for (const socket of sockets) socket.destroy();
}

process.on("message", (m) => {
  if (m === "stop") controller.abort();
});
const attacks: Record<string, () => Promise<void>> = {
  "connect-no-token": () => floodConnect({}),
  "grpc-no-token": floodGrpc,
  "connect-token": () => floodConnect({ authorization: `Bearer ${token}` }),
  "stuck-watchers": stuckWatchers,
};
await attacks[attack]!();
process.exit(0);
