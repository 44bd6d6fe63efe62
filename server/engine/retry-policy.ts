/**
 * Retry policies (RetryPolicy, after Temporal's): the one an action runs under — its
 * request's over its plugin's (plugins[].retry), field by field — which of its failures
 * are retried, and how long it waits before each next attempt.
 */
import { create } from "@bufbuild/protobuf";
import { type Duration, durationFromMs, type Timestamp, timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  type Action,
  ActionAttemptSchema,
  type ActionError,
  ActionErrorSchema,
  ActionSchema,
  ActionStatus,
  DataAccessProgressSchema,
  type RetryPolicy,
  RetryPolicySchema,
} from "../../gen/plinth/v1/action_pb.ts";
import { cut, invalid, quote } from "../errors.ts";
import type { ActionErrorCode } from "./action-errors.ts";

export const MAX_ATTEMPTS = 100;
const DEFAULT_INITIAL_MS = 1000;
const DEFAULT_COEFFICIENT = 2;
/** Temporal's default cap: 100 times the first wait. */
const DEFAULT_MAXIMUM_FACTOR = 100;
const MAX_INTERVAL_MS = 24 * 3600 * 1000;
const MAX_COEFFICIENT = 100;
const MAX_CODES = 50;

/**
 * Failures another attempt cannot mend: the request itself (invalid_argument), a stop
 * someone asked for (cancelled, deadline_exceeded, shutting_down), the model or the
 * store (not_found, store_failed), the plugin's code or protocol, or the server's own fault.
 */
const NEVER_RETRIED = new Set<string>([
  "invalid_argument",
  "cancelled",
  "deadline_exceeded",
  "shutting_down",
  "not_found",
  "store_failed",
  "plugin_load_failed",
  "protocol_error",
  "internal",
] satisfies ActionErrorCode[]);

/** The policy as a config gives it (plugins[].retry), intervals in seconds. */
export interface ConfiguredRetry {
  max_attempts?: number | undefined;
  initial_interval?: number | undefined;
  backoff_coefficient?: number | undefined;
  maximum_interval?: number | undefined;
  non_retryable_error_codes?: string[] | undefined;
}

/** A config's policy as the message a request carries. */
export function retryPolicyOf(configured: ConfiguredRetry): RetryPolicy {
  const seconds = (s: number | undefined) => (s === undefined ? undefined : durationFromMs(Math.round(s * 1000)));
  const initial = seconds(configured.initial_interval);
  const maximum = seconds(configured.maximum_interval);
  return create(RetryPolicySchema, {
    maxAttempts: configured.max_attempts ?? 0,
    ...(initial ? { initialInterval: initial } : {}),
    backoffCoefficient: configured.backoff_coefficient ?? 0,
    ...(maximum ? { maximumInterval: maximum } : {}),
    nonRetryableErrorCodes: configured.non_retryable_error_codes ?? [],
  });
}

/**
 * The policy an action runs under: the request's fields over the plugin's, the rest at
 * their defaults; undefined when it allows one attempt only. INVALID_ARGUMENT naming the
 * request's field when one is out of bounds.
 */
export function effectiveRetry(requested: RetryPolicy | undefined, configured: RetryPolicy | undefined): RetryPolicy | undefined {
  if (requested) check(requested);
  const pick = <K extends keyof RetryPolicy>(key: K, unset: (v: RetryPolicy[K]) => boolean): RetryPolicy[K] | undefined => {
    if (requested && !unset(requested[key])) return requested[key];
    if (configured && !unset(configured[key])) return configured[key];
    return undefined;
  };
  const maxAttempts = pick("maxAttempts", (v) => !v) ?? 1;
  if (maxAttempts <= 1) return undefined;
  const initial = pick("initialInterval", (v) => v === undefined) ?? durationFromMs(DEFAULT_INITIAL_MS);
  const initialMs = millis(initial);
  const maximum = pick("maximumInterval", (v) => v === undefined) ?? durationFromMs(Math.min(initialMs * DEFAULT_MAXIMUM_FACTOR, MAX_INTERVAL_MS));
  if (millis(maximum) < initialMs) {
    throw invalid(`retry.maximum_interval: must be at least initial_interval (${initialMs / 1000} s), got ${millis(maximum) / 1000} s`);
  }
  const codes = [...(configured?.nonRetryableErrorCodes ?? []), ...(requested?.nonRetryableErrorCodes ?? [])];
  return create(RetryPolicySchema, {
    maxAttempts,
    initialInterval: initial,
    backoffCoefficient: pick("backoffCoefficient", (v) => !v) ?? DEFAULT_COEFFICIENT,
    maximumInterval: maximum,
    nonRetryableErrorCodes: [...new Set(codes)],
  });
}

/** Refuses a request's policy whose fields are out of bounds, naming the field. */
function check(policy: RetryPolicy): void {
  if (policy.maxAttempts > MAX_ATTEMPTS) throw invalid(`retry.max_attempts: at most ${MAX_ATTEMPTS}, got ${policy.maxAttempts}`);
  for (const [field, value] of [
    ["initial_interval", policy.initialInterval],
    ["maximum_interval", policy.maximumInterval],
  ] as const) {
    if (!value) continue;
    const ms = millis(value);
    if (!(ms >= 1 && ms <= MAX_INTERVAL_MS)) throw invalid(`retry.${field}: must be between 1 ms and 1 day, got ${ms / 1000} s`);
  }
  const c = policy.backoffCoefficient;
  if (c !== 0 && !(c >= 1 && c <= MAX_COEFFICIENT))
    throw invalid(`retry.backoff_coefficient: must be between 1 and ${MAX_COEFFICIENT}, or 0 for 2; got ${c}`);
  if (policy.nonRetryableErrorCodes.length > MAX_CODES) {
    throw invalid(`retry.non_retryable_error_codes: at most ${MAX_CODES}, got ${policy.nonRetryableErrorCodes.length}`);
  }
  for (const code of policy.nonRetryableErrorCodes) {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(code)) {
      throw invalid(`retry.non_retryable_error_codes: ${quote(code)} is not an error code (lowercase letters, digits, "_", "." and "-")`);
    }
  }
}

/** Whether a failure with this code gets another attempt under the policy (attempts left aside). */
export function isRetryable(policy: RetryPolicy, code: string): boolean {
  return !NEVER_RETRIED.has(code) && !policy.nonRetryableErrorCodes.includes(code);
}

/** The wait before attempt `next` (2 for the first retry): initial × coefficient^(next − 2), at most maximum. */
export function retryDelayMs(policy: RetryPolicy, next: number): number {
  const initial = policy.initialInterval ? millis(policy.initialInterval) : DEFAULT_INITIAL_MS;
  const maximum = policy.maximumInterval ? millis(policy.maximumInterval) : initial * DEFAULT_MAXIMUM_FACTOR;
  const coefficient = policy.backoffCoefficient || DEFAULT_COEFFICIENT;
  return Math.min(maximum, initial * coefficient ** Math.max(0, next - 2));
}

function millis(d: Duration): number {
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}

/**
 * The wait before the action's next attempt after a failure with `code`, when its policy
 * gives it one; undefined: it has no further attempt.
 */
export function nextAttemptDelay(action: Pick<Action, "retry" | "attempt">, code: string): number | undefined {
  const { retry } = action;
  const attempt = action.attempt || 1;
  if (!retry || attempt >= retry.maxAttempts || !isRetryable(retry, code)) return undefined;
  return retryDelayMs(retry, attempt + 1);
}

/** An earlier attempt keeps this much of its error's message. */
const MAX_ATTEMPT_MESSAGE = 1000;

/**
 * What the action becomes once its attempt (started at `start`, when known) failed with
 * `error` and the next one starts in `delayMs`: queued again, its attempt counted up, the
 * failed one listed with its error's code and the start of its message (a hundred
 * attempts' stacks on every later write of the action would weigh on it), its data
 * access to run again.
 */
export function nextAttempt(
  action: Action,
  error: ActionError,
  start: Timestamp | undefined,
  delayMs: number,
): Pick<Action, "status" | "attempt" | "attempts" | "nextAttemptTime" | "dataAccess"> {
  const attempt = action.attempt || 1;
  const failed = create(ActionAttemptSchema, {
    attempt,
    error: create(ActionErrorSchema, { code: error.code, message: cut(error.message, MAX_ATTEMPT_MESSAGE) }),
    ...(start ? { startTime: start } : {}),
    endTime: timestampNow(),
    server: action.server,
  });
  return {
    status: ActionStatus.QUEUED,
    attempt: attempt + 1,
    attempts: [...action.attempts, failed],
    nextAttemptTime: timestampFromMs(Date.now() + delayMs),
    dataAccess: action.dataAccess.map((entry) =>
      Object.freeze(create(DataAccessProgressSchema, { argument: entry.argument, name: entry.name, status: ActionStatus.QUEUED })),
    ),
  };
}

/**
 * An unfinished action whose server is gone (a restart, a lost server of a cluster), as
 * its next attempt waits to run: one never started, or waiting for a retry already, as it
 * was; one that ran, with that attempt failed `interrupted` and the next scheduled.
 * Undefined when its policy gives it no further attempt: it ends interrupted.
 */
export function afterLoss(action: Action, message: string): Action | undefined {
  if (!action.retry) return undefined;
  if (action.status === ActionStatus.QUEUED && (action.nextAttemptTime || !action.startTime)) return action;
  const delay = nextAttemptDelay(action, "interrupted");
  if (delay === undefined) return undefined;
  const error = create(ActionErrorSchema, { code: "interrupted", message });
  // The action's start is its first attempt's; a later attempt's start is not kept.
  const start = action.attempt > 1 ? undefined : action.startTime;
  return create(ActionSchema, { ...action, ...nextAttempt(action, error, start, delay), updateTime: timestampNow(), queuePosition: 0 });
}
