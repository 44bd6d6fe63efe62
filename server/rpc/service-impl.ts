import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { RawServiceImplementation } from "nice-grpc";
import type { NiceDefinition } from "./service-definition.ts";

/** The implementation type of a generated service, for nice-grpc. */
export type ServiceImpl<T> = T extends GenService<infer S extends GenServiceMethods> ? RawServiceImplementation<NiceDefinition<S>> : never;
