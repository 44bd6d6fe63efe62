/**
 * An action's reported states drawn: one small line chart per number the states carry
 * (loss, accuracy…), over the epoch when they say one, else over time. Plain SVG.
 */
import type { JsonValue } from "@bufbuild/protobuf";

export interface Point {
  /** ms */
  time: number;
  state: JsonValue | undefined;
}

/** Numbers that count the work, not measure it: a bar shows them already. */
const NOT_DRAWN = new Set(["progress", "done", "total", "epoch", "epochs", "attempt", "step", "steps"]);
const W = 300;
const H = 90;
const PAD = 4;

const numbers = (state: JsonValue | undefined): Record<string, number> =>
  state && typeof state === "object" && !Array.isArray(state)
    ? Object.fromEntries(Object.entries(state).filter((e): e is [string, number] => typeof e[1] === "number" && Number.isFinite(e[1])))
    : {};

export function Charts({ points }: { points: Point[] }) {
  const rows = points.map((p) => ({ time: p.time, values: numbers(p.state) }));
  const byEpoch = rows.length > 1 && rows.every((r) => r.values.epoch !== undefined);
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r.values)))].filter(
    (k) => !NOT_DRAWN.has(k) && rows.filter((r) => r.values[k] !== undefined).length >= 2,
  );
  if (keys.length === 0) return null;
  return (
    <div class="charts" data-testid="charts">
      {keys.map((key) => {
        const xy = rows.filter((r) => r.values[key] !== undefined).map((r) => [byEpoch ? r.values.epoch! : r.time, r.values[key]!] as const);
        return <Chart key={key} name={key} xy={xy} over={byEpoch ? "epoch" : "time"} />;
      })}
    </div>
  );
}

function Chart({ name, xy, over }: { name: string; xy: (readonly [number, number])[]; over: string }) {
  const xs = xy.map((p) => p[0]);
  const ys = xy.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => PAD + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * PAD);
  const sy = (y: number) => H - PAD - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * PAD);
  const last = ys.at(-1)!;
  return (
    <figure class="chart" data-testid={`chart-${name}`} data-points={xy.length}>
      <figcaption>
        {name} <strong>{fmt(last)}</strong>{" "}
        <span class="muted">
          over {over}; min {fmt(y0)}, max {fmt(y1)}
        </span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label={`${name} over ${over}, last ${fmt(last)}`}>
        <polyline
          fill="none"
          stroke="currentColor"
          stroke-width="1.5"
          points={xy.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")}
        />
      </svg>
    </figure>
  );
}

const fmt = (n: number) => (Math.abs(n) >= 1000 || n === Math.round(n) ? String(Math.round(n)) : n.toPrecision(3));
