/**
 * `npm run bench:durable`: retries as a policy says them, through a real server process
 * (SQLite) and its children.
 * (a) A fit that fails three times, under a policy of 4 attempts, 500 ms first, ×2: each
 *     wait between attempts (from the failed attempt's end to the next one's start, as the
 *     action records them) against the policy's (target: within 10 %).
 * (b) CancelAction on a fit waiting 60 s for its next attempt: from the call to the
 *     answer that it ended CANCELLED (target: < 50 ms).
 * The baseline is the policy itself: before retries, the same fit ended FAILED at once.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Action, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import {
  CancelActionRequestSchema,
  CancelActionResponseSchema,
  GetActionRequestSchema,
  GetActionResponseSchema,
} from "../gen/plinth/v1/action_service_pb.ts";
import { FitRequestSchema, FitResponseSchema } from "../gen/plinth/v1/engine_service_pb.ts";
import { json } from "../test/helpers/args.ts";
import { bytes, createModel, startPlinth, unary } from "./grpc-calls.ts";
import { percentile, printTable } from "./report.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 1 : 3;
const POLICY = { maxAttempts: 4, initialMs: 500, coefficient: 2 };

const server = await startPlinth("test/fixtures/plugins/durable.ts", { engine: { max_children: 2 } });
const { client } = server;

const fitWith = async (modelId: string, kwargs: Record<string, number>, retry: { maxAttempts: number; initialMs: number; coefficient?: number }) => {
  const request = bytes(FitRequestSchema, {
    modelId,
    kwargs: Object.fromEntries(Object.entries(kwargs).map(([k, v]) => [k, json(v)])),
    retry: { maxAttempts: retry.maxAttempts, initialInterval: durationFromMs(retry.initialMs), backoffCoefficient: retry.coefficient ?? 2 },
  });
  return (await unary(client, "/plinth.v1.EngineService/Fit", request, (b) => fromBinary(FitResponseSchema, b))).action!;
};
const getAction = async (actionId: string): Promise<Action> =>
  (
    await unary(client, "/plinth.v1.ActionService/GetAction", bytes(GetActionRequestSchema, { actionId }), (b) =>
      fromBinary(GetActionResponseSchema, b),
    )
  ).action!;
const until = async (actionId: string, done: (a: Action) => boolean): Promise<Action> => {
  for (;;) {
    const action = await getAction(actionId);
    if (done(action)) return action;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

// (a) the waits between attempts
const waits: number[][] = [[], []];
for (let round = 0; round < ROUNDS; round++) {
  const modelId = await createModel(client, "durable.Trainer");
  const started = await fitWith(modelId, { fail: 3, epochs: 1, epoch_ms: 0 }, POLICY);
  const ended = await until(started.id, (a) => a.status === ActionStatus.SUCCEEDED || a.status === ActionStatus.FAILED);
  if (ended.status !== ActionStatus.SUCCEEDED || ended.attempt !== 4) throw new Error(`expected attempt 4 to succeed: ${ended.error?.message}`);
  for (let i = 0; i < 2; i++) waits[i]!.push(timestampMs(ended.attempts[i + 1]!.startTime!) - timestampMs(ended.attempts[i]!.endTime!));
}
const rows = waits.map((measured, i) => {
  const policy = POLICY.initialMs * POLICY.coefficient ** i;
  const sorted = [...measured].sort((x, y) => x - y);
  const worst = Math.max(...measured.map((m) => Math.abs(m - policy) / policy));
  return [`${i + 1} → ${i + 2}`, `${policy}`, sorted.map((m) => m.toFixed(0)).join(", "), `${(worst * 100).toFixed(1)} %`, worst <= 0.1 ? "✓" : "✗"];
});
console.log(`\n(a) waits between attempts, policy ${POLICY.maxAttempts} attempts, ${POLICY.initialMs} ms, ×${POLICY.coefficient} (${ROUNDS} rounds)`);
printTable(["attempts", "policy ms", "measured ms", "worst error", "≤ 10 %"], rows);

// (b) cancel during the wait for the next attempt
const cancels: number[] = [];
for (let round = 0; round < ROUNDS * 3; round++) {
  const modelId = await createModel(client, "durable.Trainer");
  const started = await fitWith(modelId, { fail: 1, epochs: 1, epoch_ms: 0 }, { maxAttempts: 2, initialMs: 60_000 });
  await until(started.id, (a) => a.attempt === 2 && a.status === ActionStatus.QUEUED);
  const t0 = performance.now();
  const res = await unary(client, "/plinth.v1.ActionService/CancelAction", bytes(CancelActionRequestSchema, { actionId: started.id }), (b) =>
    fromBinary(CancelActionResponseSchema, b),
  );
  cancels.push(performance.now() - t0);
  if (res.action?.status !== ActionStatus.CANCELLED) throw new Error(`cancel during a retry's wait: ${ActionStatus[res.action?.status ?? 0]}`);
}
cancels.sort((x, y) => x - y);
console.log(`\n(b) CancelAction during a 60 s wait for the next attempt (${cancels.length} cancels)`);
printTable(["p50 ms", "max ms", "< 50 ms"], [[percentile(cancels, 50).toFixed(1), cancels.at(-1)!.toFixed(1), cancels.at(-1)! < 50 ? "✓" : "✗"]]);
await server.stop();
