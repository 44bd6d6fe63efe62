/**
 * ctx.checkpoint(value) in a real child, driven over its pipe as the server drives it: the
 * Checkpoint frame and the answer the plugin waits for (stored, or refused), the value an
 * earlier attempt stored given back as ctx.info.checkpoint, and a cancel that comes while
 * the plugin waits for an answer (the server answers none once it stops a call).
 */
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { CallKind } from "../gen/plinth/worker/v1/worker_pb.ts";
import type { PluginValue } from "../sdk/mod.ts";
import { decodeValue, encodeValue } from "../sdk/worker/codec.ts";
import { fixture } from "./helpers/server.ts";
import { WorkerPipe, workerCommand } from "./helpers/worker-pipe.ts";

const pipes: WorkerPipe[] = [];
afterEach(async () => {
  for (const pipe of pipes.splice(0)) await pipe.close();
});

async function child(): Promise<WorkerPipe> {
  const pipe = new WorkerPipe(workerCommand("node", fixture("durable.ts"), [String(64 * 1024 * 1024), "50", "0"]));
  pipes.push(pipe);
  expect((await pipe.next()).kind.case, pipe.stderr).toBe("hello");
  return pipe;
}

const instance = new TextEncoder().encode(JSON.stringify({ runs: [] }));

/** A fit of `epochs` epochs of no time, as attempt `attempt` with `checkpoint` from an earlier one. */
function sendFit(pipe: WorkerPipe, callId: string, epochs: number, attempt = 1, checkpoint?: PluginValue): void {
  pipe.send({
    kind: {
      case: "call",
      value: {
        callId,
        kind: CallKind.FIT,
        target: "durable.Trainer",
        instance,
        kwargs: { epochs: encodeValue(epochs), epoch_ms: encodeValue(0) },
        attempt,
        ...(checkpoint === undefined ? {} : { checkpoint: encodeValue(checkpoint) }),
      },
    },
  });
}

describe("ctx.checkpoint(value) in a child", () => {
  it("sends each checkpoint and waits for the server's answer; the fit goes on once it is stored", async () => {
    const pipe = await child();
    sendFit(pipe, "1", 2);
    const first = await pipe.nextBesidesProgress();
    expect(first.case).toBe("checkpoint");
    if (first.case !== "checkpoint") return;
    expect(first.value).toMatchObject({ callId: "1", seq: 1 });
    expect(decodeValue(first.value.value)).toEqual({ epoch: 1 });
    pipe.send({ kind: { case: "checkpointStored", value: { callId: "1", seq: 1, error: "" } } });
    const second = await pipe.nextBesidesProgress();
    expect(second.case === "checkpoint" && second.value.seq).toBe(2);
    pipe.send({ kind: { case: "checkpointStored", value: { callId: "1", seq: 2, error: "the store is full" } } });
    // The fixture does not catch a refused checkpoint: its fit fails with the server's reason.
    const end = await pipe.nextBesidesProgress();
    expect(end.case).toBe("failure");
    expect(end.case === "failure" && end.value.message).toBe("ctx.checkpoint: the store is full");
  });

  it("gives a later attempt the checkpoint an earlier one stored, as ctx.info.checkpoint", async () => {
    const pipe = await child();
    sendFit(pipe, "1", 3, 2, { epoch: 2 });
    const stored = await pipe.nextBesidesProgress();
    expect(stored.case === "checkpoint" && decodeValue(stored.value.value)).toEqual({ epoch: 3 });
    pipe.send({ kind: { case: "checkpointStored", value: { callId: "1", seq: 1, error: "" } } });
    const end = await pipe.nextBesidesProgress();
    expect(end.case).toBe("result");
    const model = end.case === "result" ? JSON.parse(new TextDecoder().decode(end.value.instance!)) : undefined;
    expect(model).toEqual({ runs: [{ attempt: 2, from: 2, epochs: [3] }] });
  });

  it("a cancel while the plugin waits for a checkpoint's answer reaches it: the call fails cancelled and the child exits by itself", async () => {
    const pipe = await child();
    sendFit(pipe, "1", 2);
    expect((await pipe.nextBesidesProgress()).case).toBe("checkpoint");
    // No answer comes: the server stops the call (SIGTERM), as a cancel does.
    const exited = once(pipe.process, "exit");
    pipe.process.kill("SIGTERM");
    const end = await pipe.nextBesidesProgress();
    expect(end.case).toBe("failure");
    expect(end.case === "failure" && end.value.name).toBe("AbortError");
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 143, signal: null });
  });
});
