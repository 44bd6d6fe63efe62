/**
 * An action's reported states over time (Action.states): what a chart of its loss per
 * epoch draws. Bounded: at most MAX_POINTS. It keeps every `stride`-th report (the first
 * one included) and the latest; when full, the stride doubles and the points off it go,
 * so a long fit's whole curve stays, evenly spaced, at a coarser step. A state too large
 * for a chart's point is left out.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type StatePoint, StatePointSchema } from "../../gen/plinth/v1/action_pb.ts";

export const MAX_POINTS = 256;
export const MAX_POINT_BYTES = 2048;

export class StateSeries {
  /** The kept reports, each with its number (0 for the first). */
  #kept: { n: number; point: StatePoint }[] = [];
  /** The latest report, when it is not one of the kept. */
  #latest: StatePoint | undefined;
  #stride = 1;
  #reports = 0;

  add(state: Value): void {
    if (toBinary(ValueSchema, state).byteLength > MAX_POINT_BYTES) return;
    const n = this.#reports++;
    const point = create(StatePointSchema, { time: timestampNow(), state });
    if (n % this.#stride !== 0) {
      this.#latest = point;
      return;
    }
    this.#latest = undefined;
    // One place is the latest's: the kept fill the rest.
    if (this.#kept.length >= MAX_POINTS - 1) {
      this.#stride *= 2;
      this.#kept = this.#kept.filter((k) => k.n % this.#stride === 0);
      if (n % this.#stride !== 0) {
        this.#latest = point;
        return;
      }
    }
    this.#kept.push({ n, point });
  }

  get points(): StatePoint[] {
    const points = this.#kept.map((k) => k.point);
    return this.#latest ? [...points, this.#latest] : points;
  }
}
