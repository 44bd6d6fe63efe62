/** An action's reported states over time (Action.states): bounded, thinned evenly, big states left out. */
import { fromJson, toJson } from "@bufbuild/protobuf";
import { timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, test } from "vitest";
import type { StatePoint } from "../../gen/plinth/v1/action_pb.ts";
import { MAX_POINT_BYTES, MAX_POINTS, StateSeries } from "../../server/engine/state-series.ts";

const epochOf = (p: StatePoint) => (toJson(ValueSchema, p.state!) as { epoch: number }).epoch;
const state = (epoch: number) => fromJson(ValueSchema, { epoch, loss: 1 / epoch });

describe("StateSeries", () => {
  test("keeps every state up to its bound, in order, each with its time", () => {
    const series = new StateSeries();
    for (let epoch = 1; epoch <= 10; epoch++) series.add(state(epoch));
    expect(series.points.map(epochOf)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(series.points.every((p) => timestampMs(p.time!) > 0)).toBe(true);
  });

  test("past its bound, thins evenly: the first state and the latest stay, and the whole curve's span", () => {
    const series = new StateSeries();
    const n = MAX_POINTS * 10;
    for (let epoch = 1; epoch <= n; epoch++) series.add(state(epoch));
    const epochs = series.points.map(epochOf);
    expect(epochs.length).toBeLessThanOrEqual(MAX_POINTS);
    expect(epochs.length).toBeGreaterThan(MAX_POINTS / 2);
    expect(epochs[0]).toBe(1);
    expect(epochs.at(-1)).toBe(n);
    // Evenly: the same step between every two kept, but the latest.
    const gaps = new Set(epochs.slice(1, -1).map((e, i) => e - epochs[i]!));
    expect(gaps.size).toBe(1);
  });

  test("leaves out a state too large for a chart's point", () => {
    const series = new StateSeries();
    series.add(fromJson(ValueSchema, { blob: "x".repeat(MAX_POINT_BYTES) }));
    series.add(state(1));
    expect(series.points.map(epochOf)).toEqual([1]);
  });
});
