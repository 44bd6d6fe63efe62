/** plinth.v1.EngineService: thin handlers that call the engine and return. */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ActionView } from "../../gen/plinth/v1/action_pb.ts";
import type { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import type { Engine } from "../engine/engine.ts";
import { priorityOf } from "../engine/priority.ts";
import type { ServiceImpl } from "./service-impl.ts";

export function engineService(engine: () => Engine): ServiceImpl<typeof EngineService> {
  return {
    async listModels(request) {
      const { models, next } = await engine().listModels(request);
      return { models, nextPageToken: next };
    },
    async getModel(request) {
      return { model: await engine().getModel(request.modelId, request.includeInstance, request.revision) };
    },
    async createInstance(request, context) {
      const e = engine();
      const action = await e.createInstance(request.modelType, request, context.caller);
      return { action: request.wait ? await e.waitAction(action.id, ActionView.RESULT, context.signal, context.caller) : action };
    },
    async addInstance(request, context) {
      priorityOf(request.priority);
      return { model: await engine().addInstance(request.modelType, request.instance, { caller: context.caller, requestId: request.requestId }) };
    },
    async updateInstance(request, context) {
      priorityOf(request.priority);
      const options = { caller: context.caller, requestId: request.requestId };
      return { model: await engine().updateInstance(request.modelId, request.instance, context.signal, options) };
    },
    async deleteModel(request, context) {
      priorityOf(request.priority);
      await engine().deleteModel(request.modelId, { caller: context.caller, requestId: request.requestId });
      return {};
    },
    async fit(request, context) {
      const e = engine();
      const action = await e.fit(request.modelId, request, context.caller);
      return { action: request.wait ? await e.waitAction(action.id, ActionView.RESULT, context.signal, context.caller) : action };
    },
    async predict(request, context) {
      const e = engine();
      const action = await e.predict(request.modelId, request, context.caller);
      return { action: request.wait ? await e.waitAction(action.id, ActionView.RESULT, context.signal, context.caller) : action };
    },
    async listPlugins() {
      const e = engine();
      const servers = (await e.servers()).map((server) => ({
        name: server.name,
        address: server.address,
        host: server.host,
        pid: server.pid,
        since: timestampFromDate(server.since),
        plugins: server.plugins,
        modelTypes: server.modelTypes,
        dataAccess: server.dataAccess,
        thisServer: server.self,
      }));
      return { plugins: e.plugins.list(), servers };
    },
  };
}
