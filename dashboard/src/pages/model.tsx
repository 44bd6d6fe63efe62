/**
 * One model: its revisions still kept (each with the action that made it, when, and its
 * size, and a download of its instance), and the actions on it, newest first.
 */
import { useEffect, useState } from "preact/hooks";
import type { Action } from "../../../gen/plinth/v1/action_pb.ts";
import type { Model } from "../../../gen/plinth/v1/model_pb.ts";
import { ActionsTable } from "../actions-table.tsx";
import { actions, engine, errorText, type Live } from "../api.ts";
import { when } from "../format.ts";

export function ModelPage({ id, live }: { id: string; live: Live }) {
  const [revisions, setRevisions] = useState<Model[]>([]);
  const [history, setHistory] = useState<Action[]>([]);
  const [error, setError] = useState("");
  const current = live.models.get(id);
  // Again whenever the model gets a new revision.
  useEffect(() => {
    let alive = true;
    (async () => {
      const latest = (await engine.getModel({ modelId: id })).model!;
      const older = [];
      for (let r = latest.oldestRevision || 1n; r < latest.revision; r++)
        older.push(engine.getModel({ modelId: id, revision: r }).then((m) => m.model!));
      const all = [latest, ...(await Promise.all(older)).reverse()];
      const listed = (await actions.listActions({ modelId: id, pageSize: 100 })).actions;
      if (!alive) return;
      setRevisions(all);
      setHistory(listed);
    })().catch((e: unknown) => alive && setError(errorText(e)));
    return () => {
      alive = false;
    };
  }, [id, current?.revision]);
  const download = async (revision: bigint) => {
    try {
      const { model } = await engine.getModel({ modelId: id, revision, includeInstance: true });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([model!.instance as Uint8Array<ArrayBuffer>]));
      link.download = `${id}-r${revision}.bin`;
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const model = revisions[0];
  if (!model) return <p class={error ? "error" : "muted"}>{error || "loading…"}</p>;
  // The live views of its actions are the newer.
  const rows = history.map((a) => live.actions.get(a.id) ?? a);
  for (const a of live.actions.values()) if (a.modelId === id && !history.some((h) => h.id === a.id)) rows.unshift(a);
  return (
    <div class="model" data-testid="model">
      <h2>
        {model.modelType} <span class="muted">{model.id}</span>
      </h2>
      {error && <p class="error">{error}</p>}
      <p>
        revision {String(model.revision)}, {String(model.instanceSize)} B, created {when(model.createTime)}, updated {when(model.updateTime)}
      </p>
      <h3>Revisions</h3>
      <table data-testid="revisions">
        <thead>
          <tr>
            <th>revision</th>
            <th>made by</th>
            <th>when</th>
            <th>size</th>
            <th>instance</th>
          </tr>
        </thead>
        <tbody>
          {revisions.map((r) => (
            <tr key={String(r.revision)} data-revision={String(r.revision)}>
              <td class="num">{String(r.revision)}</td>
              <td>{r.actionId ? <a href={`#/actions/${r.actionId}`}>{r.actionId}</a> : <span class="muted">AddInstance / UpdateInstance</span>}</td>
              <td class="num">{when(r.updateTime)}</td>
              <td class="num">{String(r.instanceSize)} B</td>
              <td>
                <button type="button" data-testid={`download-${r.revision}`} onClick={() => download(r.revision)}>
                  Download
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {model.oldestRevision > 1n && <p class="muted">Revisions before {String(model.oldestRevision)} are no longer kept (backend.keep_revisions).</p>}
      <h3>Actions on it</h3>
      <ActionsTable actions={rows} testId="model-actions" columns={["call", "status", "progress", "created", "duration", "error"]} />
    </div>
  );
}
