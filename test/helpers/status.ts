/** Asserting a call's gRPC status and message. */
import { Status } from "nice-grpc";
import { expect } from "vitest";

/** Rejects with the given status and a message matching `message`; returns the message. */
export async function expectStatus(call: Promise<unknown>, code: Status, message: RegExp): Promise<string> {
  const error = await call.then(
    () => {
      throw new Error("the call succeeded");
    },
    (e: { code: Status; details: string }) => e,
  );
  // Status names, not numbers, in a failure's diff.
  expect({ code: Status[error.code], details: error.details }).toEqual({ code: Status[code], details: expect.stringMatching(message) });
  return error.details;
}
