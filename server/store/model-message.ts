/** A model's metadata as the API shows it. */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Model, ModelSchema } from "../../gen/plinth/v1/model_pb.ts";
import type { ModelMeta } from "./store.ts";

/** The model as the API shows it, without its instance unless given. */
export function modelMessage(meta: ModelMeta, instance?: Uint8Array): Model {
  return create(ModelSchema, {
    id: meta.id,
    modelType: meta.modelType,
    revision: meta.revision,
    createTime: timestampFromDate(meta.createTime),
    updateTime: timestampFromDate(meta.updateTime),
    instanceSize: BigInt(meta.instanceSize),
    actionId: meta.actionId,
    oldestRevision: meta.oldestRevision,
    ...(instance ? { instance } : {}),
  });
}

/** The metadata the API shows, back as the store keeps it. */
export function modelMeta(model: Model): ModelMeta {
  const date = (t: Model["createTime"]) => (t ? timestampDate(t) : new Date(0));
  return {
    id: model.id,
    modelType: model.modelType,
    revision: model.revision,
    createTime: date(model.createTime),
    updateTime: date(model.updateTime),
    instanceSize: Number(model.instanceSize),
    actionId: model.actionId,
    oldestRevision: model.oldestRevision,
  };
}
