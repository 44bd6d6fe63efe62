/** The models the live state holds, by model type, searchable by id, each with its last action; each links to its page. */
import { useMemo, useState } from "preact/hooks";
import type { Action } from "../../../gen/plinth/v1/action_pb.ts";
import type { Live } from "../api.ts";
import { CALL, STATUS } from "../format.ts";

export function ModelsPage({ live }: { live: Live }) {
  const [query, setQuery] = useState("");
  const [type, setType] = useState("");
  const types = [...new Set([...live.models.values()].map((m) => m.modelType))].sort();
  const lastAction = useMemo(() => {
    const last = new Map<string, Action>();
    for (const a of live.actions.values()) if (a.modelId && (!last.get(a.modelId) || last.get(a.modelId)!.id < a.id)) last.set(a.modelId, a);
    return last;
  }, [live]);
  const models = [...live.models.values()].filter(
    (m) => (!type || m.modelType === type) && (!query || m.id.includes(query) || m.modelType.includes(query)),
  );
  return (
    <>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          model type
          <select name="type" value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {types.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <label>
          search
          <input placeholder="by id or type" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
        </label>
      </form>
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
                <td>
                  <a href={`#/models/${m.id}`}>{m.id}</a>
                </td>
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
