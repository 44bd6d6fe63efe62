/**
 * The child's main thread, on web-standard APIs only: starts the plugin's thread,
 * passes it the calls read from the input and writes the frames it sends back. It
 * runs no plugin code, so it always answers: SIGTERM sets the shared cancel flag
 * that the plugin sees at once, and when the input ends (the server is done with
 * this child, or gone) the child exits within a second, whatever the plugin is doing.
 * The runtime adapters (../adapters) supply the pipes, the signal and the thread.
 * @module
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ServerMessageSchema, WorkerMessageSchema } from "../../gen/plinth/worker/v1/worker_pb.ts";
import { FrameDecoder, frameHeader } from "./frames.ts";
import type { FromThread, ToThread } from "./thread.ts";

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
  /** Writes bytes to the protocol channel (the real stdout). */
  write(bytes: Uint8Array): Promise<void>;
  /** Registers the SIGTERM handler. */
  onTerminate(listener: () => void): void;
  /** The plugin's thread, already sent its start message (thread-start.ts)... */
  thread: ThreadPort;
  /** ...and the cancel flag it shares with it. */
  cancelled: Int32Array;
  exit(code: number): void;
  maxFrameBytes: number;
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

  const { thread, cancelled } = host;
  /** The call the thread is running (or about to), by id. */
  let running: string | undefined;
  let terminated = false;
  let inputEnded = false;
  const cancel = () => {
    Atomics.store(cancelled, 0, 1);
    thread.post({ type: "cancel" });
  };

  thread.onMessage((message) => {
    if (message.type === "frame") void write(message.bytes);
    else if (message.type === "unusable") exit(1);
    else {
      running = undefined;
      if (terminated) exit(EXIT_TERMINATED);
      else if (inputEnded) exit(0);
    }
  });
  thread.onError((error) => {
    // The thread is gone; its call (if any) fails here, named for what killed it.
    const outOfMemory = error.code === "ERR_WORKER_OUT_OF_MEMORY" || /out of memory/i.test(error.message);
    const name = outOfMemory ? "OutOfMemoryError" : error.name;
    const failure = { callId: running ?? "", name, message: error.message, stack: error.stack ?? "" };
    void write(toBinary(WorkerMessageSchema, create(WorkerMessageSchema, { kind: { case: "failure", value: failure } })));
    exit(1);
  });
  thread.onExit?.((code) => exit(code));
  host.onTerminate(() => {
    terminated = true;
    if (running !== undefined) cancel();
    else exit(EXIT_TERMINATED);
  });

  const decoder = new FrameDecoder(host.maxFrameBytes);
  for await (const chunk of host.input) {
    for (const frame of decoder.push(chunk)) {
      const message = fromBinary(ServerMessageSchema, frame);
      if (message.kind.case !== "call" || terminated) continue;
      running = message.kind.value.callId;
      Atomics.store(cancelled, 0, 0);
      // A copy of exactly the frame, handed over without another copy.
      const own = frame.slice();
      thread.post({ type: "call", frame: own }, [own.buffer as ArrayBuffer]);
    }
  }
  // The server closed our input: it is done with this child, or it is gone.
  inputEnded = true;
  if (running === undefined) return exit(0);
  cancel();
  setTimeout(() => exit(0), INPUT_ENDED_GRACE_MS);
}
