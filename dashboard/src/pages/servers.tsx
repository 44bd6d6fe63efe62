/**
 * The servers: each server of a cluster (or this one, on its own) with its plugins, its
 * model types and the actions it runs now; and the load over the last minutes, from the
 * live state: actions ended per second, queued, and running (each takes a child).
 */
import { useEffect, useState } from "preact/hooks";
import { type Action, ActionStatus } from "../../../gen/plinth/v1/action_pb.ts";
import type { Server } from "../../../gen/plinth/v1/engine_service_pb.ts";
import { engine, errorText, type Live } from "../api.ts";
import { Charts } from "../chart.tsx";
import { CALL } from "../format.ts";
import { loadSamples, onLoadSample } from "../load.ts";

const running = (a: Action) => a.status > ActionStatus.QUEUED && a.status < ActionStatus.SUCCEEDED;

export function ServersPage({ live }: { live: Live }) {
  const [servers, setServers] = useState<Server[] | undefined>();
  const [error, setError] = useState("");
  const [, setTick] = useState(0);
  useEffect(() => onLoadSample(() => setTick((n) => n + 1)), []);
  useEffect(() => {
    engine.listPlugins({}).then(
      (r) => setServers(r.servers),
      (e: unknown) => setError(errorText(e)),
    );
  }, []);
  const active = [...live.actions.values()].filter(running);
  const samples = loadSamples();
  const points = samples.map((s) => ({ time: s.time, state: { "actions ended /s": s.ended, queued: s.queued, running: s.running } }));
  const list = servers?.length ? servers : undefined;
  return (
    <>
      {error && <p class="error">{error}</p>}
      <h3>Load, the last minutes</h3>
      {points.length > 1 ? <Charts points={points} /> : <p class="muted">Sampling each second…</p>}
      <h3>Servers</h3>
      {servers && !list && <p data-testid="on-its-own">This server runs on its own (no cluster): {active.length} running.</p>}
      <table data-testid="servers">
        <thead>
          <tr>
            <th>server</th>
            <th>address</th>
            <th>host · pid</th>
            <th>plugins</th>
            <th>running</th>
          </tr>
        </thead>
        <tbody>
          {(list ?? []).map((s) => {
            const mine = active.filter((a) => a.server === s.name);
            return (
              <tr key={s.name} data-server={s.name}>
                <td>
                  <strong>{s.name}</strong> {s.thisServer ? <span class="muted">(answering)</span> : ""}
                </td>
                <td>{s.address}</td>
                <td>
                  {s.host} · {s.pid}
                </td>
                <td title={s.modelTypes.join(", ")}>{s.plugins.join(", ")}</td>
                <td class="num" data-testid="running">
                  {mine.length}
                  {mine.slice(0, 5).map((a) => (
                    <>
                      {" "}
                      <a href={`#/actions/${a.id}`}>{`${CALL[a.call]} ${a.modelType}`}</a>
                    </>
                  ))}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}
