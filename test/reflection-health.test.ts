import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.ts";

/** A reflection client as grpcurl uses it, from the reflection protos that @grpc/reflection ships. */
function reflectionClient(port: number, version: "v1" | "v1alpha") {
  const protoDir = join(dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json")), "build/proto");
  const definition = loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [protoDir], keepCase: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> };
  };
  const Client = pkg.grpc.reflection[version]!.ServerReflection;
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

type ReflectionResponse = {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
};

function ask(client: grpc.Client, request: object): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const call = (client as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse> }).ServerReflectionInfo();
    call.on("data", (response) => {
      resolve(response);
      call.end();
    });
    call.on("error", reject);
    call.write(request);
  });
}

/** The files in an order where each comes after the files it imports. */
function dependenciesFirst(files: FileDescriptorProto[]): FileDescriptorProto[] {
  const out: FileDescriptorProto[] = [];
  const visit = (file: FileDescriptorProto) => {
    if (out.includes(file)) return;
    for (const name of file.dependency) visit(files.find((f) => f.name === name)!);
    out.push(file);
  };
  files.forEach(visit);
  return out;
}

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ plugins: [{ module: "plugins/system-test/mod.ts" }] });
});
afterAll(() => t?.close());

describe("server reflection, as grpcurl uses it", () => {
  for (const version of ["v1", "v1alpha"] as const) {
    it(`${version}: lists our services and health, and describes them with complete descriptors`, async () => {
      const client = reflectionClient(t.port, version);
      try {
        const listed = await ask(client, { list_services: "" });
        const names = listed.list_services_response!.service.map((s) => s.name);
        expect(names).toEqual(
          expect.arrayContaining(["plinth.v1.EngineService", "plinth.v1.ActionService", "plinth.v1.StateService", "grpc.health.v1.Health"]),
        );

        // Like grpcurl: the file holding the symbol, then every import it lacks, by file name.
        const described = await ask(client, { file_containing_symbol: "plinth.v1.EngineService" });
        const files = described.file_descriptor_response!.file_descriptor_proto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
        for (let i = 0; i < files.length; i++) {
          for (const name of files[i]!.dependency) {
            if (files.some((f) => f.name === name)) continue;
            const byName = await ask(client, { file_by_filename: name });
            expect(byName.error_response).toBeUndefined();
            files.push(...byName.file_descriptor_response!.file_descriptor_proto.map((b) => fromBinary(FileDescriptorProtoSchema, b)));
          }
        }
        expect(files.map((f) => f.name)).toContain("google/protobuf/struct.proto");
        // The descriptors are complete and consistent: a strict registry builds from them.
        const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: dependenciesFirst(files) }));
        expect(registry.getService("plinth.v1.EngineService")?.methods.map((m) => m.name)).toContain("CreateInstance");
        expect(registry.getMessage("plinth.v1.Arg")?.fields.find((f) => f.name === "json")?.message?.typeName).toBe("google.protobuf.Value");

        const missing = await ask(client, { file_containing_symbol: "no.such.Symbol" });
        expect(missing.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
      } finally {
        client.close();
      }
    });
  }
});

describe("grpc.health.v1", () => {
  it("answers SERVING once the plugins are loaded, for the server and each service", async () => {
    const health = loadSync("grpc/health/v1/health.proto", { includeDirs: [join(import.meta.dirname, "../proto")], enums: String });
    const Health = (grpc.loadPackageDefinition(health) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }).grpc
      .health.v1.Health;
    const client = new Health(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const check = (service: string) =>
      new Promise<unknown>((resolve, reject) =>
        (client as unknown as { Check(r: object, cb: (e: Error | null, v: unknown) => void): void }).Check({ service }, (e, v) =>
          e ? reject(e) : resolve(v),
        ),
      );
    try {
      expect(await check("")).toEqual({ status: "SERVING" });
      expect(await check("plinth.v1.EngineService")).toEqual({ status: "SERVING" });
      await expect(check("no.such.Service")).rejects.toThrow(/NOT_FOUND/);
    } finally {
      client.close();
    }
  });
});
