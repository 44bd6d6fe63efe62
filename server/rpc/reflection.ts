/**
 * Server reflection (v1 and v1alpha, from @grpc/reflection) fed with the original
 * file descriptors that protobuf-es embeds in the generated code, health's included
 * (vendored in proto/grpc). proto-loader's descriptors would not do: they lose their
 * imports and merge files by package, and strict clients such as grpcurl or Python's
 * descriptor pool reject them.
 */
import { type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";

function withDependencies(files: DescFile[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    seen.set(file.name, file);
    file.dependencies.forEach(visit);
  };
  files.forEach(visit);
  return [...seen.values()];
}

export function addReflection(server: Pick<grpc.Server, "addService">, files: DescFile[]): void {
  const descriptors = withDependencies(files).map((file) => toBinary(FileDescriptorProtoSchema, file.proto));
  // ReflectionService reads only `fileDescriptorProtos` from each entry of a package definition.
  const definition = { all: { fileDescriptorProtos: descriptors } };
  new ReflectionService(definition as never).addToServer(server);
}
