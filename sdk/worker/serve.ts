/**
 * The child's main thread, on web-standard APIs only: passes the plugin's thread the
 * calls read from the input (the thread writes its frames itself). It runs no plugin
 * code, so it always answers: SIGTERM sets the shared cancel flag
 * that the plugin sees at once, and when the input ends (the server is done with
 * this child, or gone) the child exits within a second, whatever the plugin is doing.
 * The runtime adapters (../adapters) supply the pipes, the signal and the thread.
 * @module
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { WorkerMessageSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { FrameDecoder, frameHeader, ownsBuffer } from "./frames.ts";
import { collectSoon, GC_HINT_BYTES } from "./gc-hint.ts";
import type { FromThread, ToThread } from "./thread.ts";
import { THREAD_BUSY, THREAD_CANCELLED, THREAD_NOTIFY } from "./thread-start.ts";

/** The plugin's thread, as the main thread talks to it. @internal */
export interface ThreadPort {
  post(message: ToThread, transfer?: ArrayBuffer[]): void;
  onMessage(listener: (message: FromThread) => void): void;
  /** The thread died: out of memory, or a fault of the runtime. */
  onError(listener: (error: Error & { code?: string }) => void): void;
  /** The thread ended by itself: the plugin called process.exit (Node); the child exits with its code. */
  onExit?(listener: (code: number) => void): void;
}

/** What a runtime adapter provides to the child's main thread. @internal */
export interface WorkerHost {
  /** Bytes the server writes to the child's stdin. */
  input: AsyncIterable<Uint8Array>;
  /** Writes bytes to the protocol channel (the real stdout): only once the plugin's thread is gone. */
  write(bytes: Uint8Array): Promise<void>;
  /** Registers the SIGTERM handler. */
  onTerminate(listener: () => void): void;
  /** The plugin's thread, already sent its start message (thread-start.ts)... */
  thread: ThreadPort;
  /** ...and the state it shares with it: THREAD_CANCELLED, THREAD_BUSY, THREAD_NOTIFY. */
  state: Int32Array;
  exit(code: number): void;
  maxFrameBytes: number;
}

/** What a ServerMessage frame holds: a call (with its id), a Forget, a CancelItems, or nothing this child knows. */
type FrameKind =
  | { case: "call"; callId: string }
  | { case: "cancel"; callId: string }
  | { case: "forget" }
  | { case: "cancel_items" }
  | { case: "checkpoint_stored" }
  | undefined;

/**
 * The kind of a ServerMessage frame, read without decoding the rest (the plugin's thread
 * decodes it): ServerMessage.call is field 1 (Call.call_id its field 1), forget field 2,
 * cancel_items field 3, checkpoint_stored field 4, cancel field 5 (Cancel.call_id its
 * field 1). The last of them wins, as when the thread decodes it.
 */
function frameKind(frame: Uint8Array): FrameKind {
  const message = new BinaryReader(frame);
  let kind: FrameKind;
  while (message.pos < message.len) {
    const [field, wireType] = message.tag();
    if (wireType !== WireType.LengthDelimited || field < 1 || field > 5) {
      message.skip(wireType, field);
      continue;
    }
    if (field !== 1 && field !== 5) {
      message.skip(wireType, field);
      kind = field === 2 ? { case: "forget" } : field === 3 ? { case: "cancel_items" } : { case: "checkpoint_stored" };
      continue;
    }
    const call = new BinaryReader(message.bytes());
    let callId = "";
    while (call.pos < call.len) {
      const [callField, callWire] = call.tag();
      if (callField === 1 && callWire === WireType.LengthDelimited) {
        callId = call.string();
        break;
      }
      call.skip(callWire, callField);
    }
    kind = { case: field === 1 ? "call" : "cancel", callId };
  }
  return kind;
}

/** Exit code of a child that stopped because of SIGTERM (128 + 15, as a shell reports it). */
export const EXIT_TERMINATED = 143;

/** How long a call may go on once the input has ended before the child exits anyway. */
const INPUT_ENDED_GRACE_MS = 1000;

/**
 * Serves one plugin module until the input ends or SIGTERM arrives, then exits.
 * @internal
 */
export async function serveWorker(host: WorkerHost): Promise<void> {
  let writing: Promise<void> = Promise.resolve();
  const write = (payload: Uint8Array) => {
    writing = writing.then(() => host.write(frameHeader(payload.byteLength))).then(() => host.write(payload));
    return writing;
  };
  // Exits once every frame is written; the first exit wins.
  let exiting = false;
  const exit = (code: number) => {
    if (exiting) return;
    exiting = true;
    void writing.catch(() => {}).then(() => host.exit(code));
  };

  const { thread, state } = host;
  /** The id of the last call passed to the thread: its failure's, should the thread die. */
  let lastCall = "";
  /** Its number (THREAD_BUSY). */
  let callNumber = 0;
  let terminated = false;
  const busy = () => Atomics.load(state, THREAD_BUSY) !== 0;
  /** Stops the call that runs: the flag a synchronous loop reads, and the message that aborts its signal. */
  const cancelCall = () => {
    Atomics.store(state, THREAD_CANCELLED, 1);
    thread.post({ type: "cancel" });
  };
  /** Once the current call has ended (at once if none runs), exits with `code`. */
  const exitWhenIdle = (code: number) => {
    // The thread tells us when its call ends: ask, then look, so that one of the two sees the other.
    Atomics.store(state, THREAD_NOTIFY, 1);
    if (!busy()) return exit(code);
    cancelCall();
  };
  let exitCode = 0;

  thread.onMessage((message) => {
    if (message.type === "unusable") return exit(1);
    exit(exitCode); // "done": asked for by exitWhenIdle
  });
  thread.onError((error) => {
    // The thread is gone; its call (if any) fails here, named for what killed it.
    const outOfMemory = error.code === "ERR_WORKER_OUT_OF_MEMORY" || /out of memory/i.test(error.message);
    const name = outOfMemory ? "OutOfMemoryError" : error.name;
    const failure = { callId: busy() ? lastCall : "", name, message: error.message, stack: error.stack ?? "" };
    void write(toBinary(WorkerMessageSchema, create(WorkerMessageSchema, { kind: { case: "failure", value: failure } })));
    exit(1);
  });
  thread.onExit?.((code) => exit(code));
  host.onTerminate(() => {
    terminated = true;
    exitCode = EXIT_TERMINATED;
    exitWhenIdle(EXIT_TERMINATED);
  });

  const decoder = new FrameDecoder(host.maxFrameBytes);
  for await (const chunk of host.input) {
    for (const frame of decoder.push(chunk)) {
      const kind = frameKind(frame);
      if (kind === undefined || terminated) continue;
      // Exactly the frame, handed over without another copy: as it is when the decoder
      // copied it out of several chunks into a buffer of its own (a large one), else a copy.
      // (Not frame.slice(): on Node the frame may be a Buffer, whose slice is a view of the
      // chunk it was read in, and handing that over would take the chunk's next frames with it.)
      const own = ownsBuffer(frame) ? frame : new Uint8Array(frame);
      if (kind.case === "forget") {
        // Not a call: it neither starts one nor resets the current one's cancel.
        thread.post({ type: "control", frame: own }, [own.buffer as ArrayBuffer]);
        continue;
      }
      if (kind.case === "cancel") {
        // The call that runs, if it is the one named: its signal aborts; the child lives on.
        if (busy() && lastCall === kind.callId) cancelCall();
        continue;
      }
      if (kind.case === "cancel_items" || kind.case === "checkpoint_stored") {
        // About the call that runs: the thread takes it at once, not after that call.
        thread.post({ type: kind.case, frame: own }, [own.buffer as ArrayBuffer]);
        continue;
      }
      // The chunks it came in are garbage now (gc-hint.ts).
      if (frame.byteLength >= GC_HINT_BYTES) collectSoon();
      lastCall = kind.callId;
      callNumber = callNumber >= 0x7fffffff ? 1 : callNumber + 1;
      Atomics.store(state, THREAD_CANCELLED, 0);
      Atomics.store(state, THREAD_BUSY, callNumber); // the thread clears it when this call has ended
      thread.post({ type: "call", frame: own, number: callNumber }, [own.buffer as ArrayBuffer]);
    }
  }
  // The server closed our input: it is done with this child, or it is gone. A call still
  // running is cancelled, and has a second to end before the child exits all the same.
  if (!terminated) exitWhenIdle(0);
  if (busy()) setTimeout(() => exit(exitCode), INPUT_ENDED_GRACE_MS);
}
