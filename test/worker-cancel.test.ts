/**
 * A cancel in a child, frame by frame (helpers/worker-pipe.ts): it reaches the call that
 * runs, whatever came before it.
 */
import { afterEach, describe, expect, it } from "vitest";
import { CallKind } from "../gen/plinth/worker/v1/worker_pb.ts";
import { encodeValue } from "../sdk/worker/codec.ts";
import { fixture } from "./helpers/server.ts";
import { WorkerPipe, workerCommand } from "./helpers/worker-pipe.ts";

const pipes: WorkerPipe[] = [];
afterEach(async () => {
  for (const pipe of pipes.splice(0)) {
    pipe.process.kill("SIGKILL");
    await pipe.close();
  }
});

const instance = new TextEncoder().encode("{}");
const predict = (callId: string, mode: string) =>
  ({
    kind: { case: "call", value: { callId, kind: CallKind.PREDICT, target: "misbehave.Model", instance, kwargs: { mode: encodeValue(mode) } } },
  }) as const;

describe("a cancel in a child", () => {
  it("stops a CPU-bound call that came in the same read as the call before it: the first call's end does not hide the second from its cancel", async () => {
    const pipe = new WorkerPipe(workerCommand("node", fixture("misbehave.ts"), [String(64 * 1024 * 1024), "0", "0"]));
    pipes.push(pipe);
    expect((await pipe.next()).kind.case, pipe.stderr).toBe("hello");
    // Both calls in one write: the child takes the second while the first is still ending.
    pipe.send(predict("1", "ok"), predict("2", "spin_checked"));
    expect(await pipe.nextBesidesProgress()).toMatchObject({ case: "result", value: { callId: "1" } });
    // The second runs (it reported), then is cancelled: it stops at its next check.
    for (;;) {
      const { kind } = await pipe.next();
      if (kind.case === "progress" && kind.value.callId === "2") break;
    }
    pipe.send({ kind: { case: "cancel", value: { callId: "2" } } });
    expect(await pipe.nextBesidesProgress()).toMatchObject({ case: "failure", value: { callId: "2", name: "AbortError" } });
  });
});
