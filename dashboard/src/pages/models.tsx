/** The models the live state holds, searchable by id or type, each with its last action. */
import { useMemo, useState } from "preact/hooks";
import type { Action } from "../../../gen/plinth/v1/action_pb.ts";
import type { Live } from "../api.ts";
import { CALL, STATUS } from "../format.ts";

export function ModelsPage({ live }: { live: Live }) {
  const [query, setQuery] = useState("");
  const lastAction = useMemo(() => {
    const last = new Map<string, Action>();
    for (const a of live.actions.values()) if (a.modelId && (!last.get(a.modelId) || last.get(a.modelId)!.id < a.id)) last.set(a.modelId, a);
    return last;
  }, [live]);
  const models = [...live.models.values()].filter((m) => !query || m.id.includes(query) || m.modelType.includes(query));
  return (
    <>
      <input placeholder="search by id or type" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
      <table data-testid="models">
        <thead>
          <tr>
            <th>model</th>
            <th>type</th>
            <th>revision</th>
            <th>size</th>
            <th>last action</th>
          </tr>
        </thead>
        <tbody>
          {models.map((m) => {
            const a = lastAction.get(m.id);
            return (
              <tr key={m.id}>
                <td>{m.id}</td>
                <td>{m.modelType}</td>
                <td>{String(m.revision)}</td>
                <td>{String(m.instanceSize)} B</td>
                <td>{a ? <a href={`#/actions/${a.id}`}>{`${CALL[a.call]} ${STATUS[a.status]}`}</a> : ""}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}
