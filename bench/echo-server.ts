/**
 * The baseline: a bare @grpc/grpc-js unary echo on loopback, no nice-grpc, no
 * Protobuf decoding. Prints its port on stdout. `--tls CERT KEY`: over TLS.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

const tls = process.argv.indexOf("--tls");
const credentials =
  tls < 0
    ? grpc.ServerCredentials.createInsecure()
    : grpc.ServerCredentials.createSsl(null, [
        { cert_chain: readFileSync(process.argv[tls + 1]!), private_key: readFileSync(process.argv[tls + 2]!) },
      ]);

const server = new grpc.Server();
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
server.addService(
  {
    echo: {
      path: "/bench.Echo/Echo",
      requestStream: false,
      responseStream: false,
      requestSerialize: bytes.serialize,
      requestDeserialize: bytes.deserialize,
      responseSerialize: bytes.serialize,
      responseDeserialize: bytes.deserialize,
    },
  },
  { echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request) },
);
server.bindAsync("127.0.0.1:0", credentials, (error, port) => {
  if (error) throw error;
  console.log(port);
});
process.on("SIGTERM", () => server.forceShutdown());
