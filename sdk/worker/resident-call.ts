/**
 * One fit's or predict's use of the instances its child keeps (residents.ts): where its
 * instance comes from, and what the child holds once it has run.
 * @module
 */
import type { Call } from "../../gen/plinth/worker/v1/worker_pb.ts";
import type { CallKind, InstanceLoader } from "../_call.ts";
import { collectNow, GC_HINT_BYTES } from "./gc-hint.ts";
import { ResidentMissingError, type ResidentRef, type Residents } from "./residents.ts";

/** What a child holds of an instance: the instance, or the bytes to make it from at first use (a fit's output). @internal */
export type Held = { instance: unknown } | { bytes: Uint8Array };

/** The revision of a model that a call names, if it names one. */
function refOf(modelId: string, revision: bigint): ResidentRef | undefined {
  return modelId !== "" && revision > 0n ? { modelId, revision } : undefined;
}

/**
 * `bytes` in a buffer of their own when they are a small part of a larger one (the call's
 * frame, with its arguments): a kept instance that views them would hold all of it.
 */
function unpinned(bytes: Uint8Array): Uint8Array {
  const rest = bytes.buffer.byteLength - bytes.byteLength;
  return rest > Math.max(bytes.byteLength, 64 * 1024) ? new Uint8Array(bytes) : bytes; // a copy, even of a Node Buffer
}

/** A call's instance, and what to keep once it has succeeded. @internal */
export interface ResidentCall {
  /** For a fit or predict: the instance held (for a `resident` call) or made from the call's bytes. */
  instance?: InstanceLoader;
  /** Once the call has succeeded, with the new instance it made (serialized), if any. */
  succeeded(made: Uint8Array | undefined): void;
}

/**
 * A call on `residents`. A resident fit takes its instance out before it runs (it may
 * change it in place, even if it then throws), and a fit's output is kept, as bytes,
 * under the call's next_revision. A predict keeps the instance it ran on, or, if it
 * returned withInstance, lets go of it and keeps the new one under next_revision. A call
 * that names no model changes nothing.
 * @internal
 */
export function residentCall(call: Call, kind: CallKind, residents: Residents<Held>): ResidentCall {
  if (kind !== "fit" && kind !== "predict") return { succeeded: () => {} };
  const ref = refOf(call.modelId, call.revision);
  /** The instance a predict deserialized: kept once it has succeeded (so it evicts nothing for a failed call). */
  let loaded: { ref: ResidentRef; size: number; instance: unknown } | undefined;
  const instance: InstanceLoader = async ({ deserialize }) => {
    if (call.resident) {
      const held = ref && (kind === "fit" ? residents.take(ref) : residents.get(ref));
      if (!ref || !held) throw new ResidentMissingError(ref);
      if (!("bytes" in held)) return held.instance;
      const instance = await deserialize(held.bytes);
      if (kind === "predict") loaded = { ref, size: held.bytes.byteLength, instance };
      return instance;
    }
    if (kind === "fit") {
      if (ref) residents.take(ref);
      return deserialize(call.instance);
    }
    if (!ref || !residents.fits(call.instance.byteLength)) return deserialize(call.instance);
    // Kept once it has run: what it would evict goes first, so both are never held at once.
    const held = residents.bytes;
    residents.makeRoom(call.instance.byteLength);
    // What it let go of is collected before the newcomer is made, not beside it.
    if (held - residents.bytes >= GC_HINT_BYTES) collectNow();
    const bytes = unpinned(call.instance);
    const instance = await deserialize(bytes);
    loaded = { ref, size: bytes.byteLength, instance };
    return instance;
  };
  return {
    instance,
    succeeded(made) {
      if (made === undefined) {
        if (loaded) residents.keep(loaded.ref, loaded.size, { instance: loaded.instance });
        return;
      }
      // A new revision: the one it ran on is out of date.
      if (ref) residents.take(ref);
      const next = refOf(call.modelId, call.nextRevision);
      if (next) residents.keep(next, made.byteLength, { bytes: unpinned(made) });
    },
  };
}
