import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { RawServiceImplementation } from "nice-grpc";
import type { Caller } from "../engine/caller.ts";
import type { NiceDefinition } from "./service-definition.ts";

/** The implementation type of a generated service, for nice-grpc; every call knows its caller (auth.ts). */
export type ServiceImpl<T> =
  T extends GenService<infer S extends GenServiceMethods> ? RawServiceImplementation<NiceDefinition<S>, { caller: Caller }> : never;
