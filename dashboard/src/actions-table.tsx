/**
 * A table of actions, each row a link to its page: the columns a page asks for, of call,
 * model type, model, status, progress, caller, server, created, duration and error code.
 * A running action's duration ticks in its own cell on one shared clock.
 */
import { useEffect, useState } from "preact/hooks";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { Bar } from "./bar.tsx";
import { CALL, duration, ended, STATUS, STATUS_KEYS, when } from "./format.ts";

const COLUMNS = {
  call: { head: "call", cell: (a: Action) => <td>{CALL[a.call]}</td> },
  type: { head: "model type", cell: (a: Action) => <td>{a.modelType}</td> },
  model: { head: "model", cell: (a: Action) => <td>{a.modelId && <a href={`#/models/${a.modelId}`}>{a.modelId}</a>}</td> },
  status: {
    head: "status",
    cell: (a: Action) => (
      <td class={`status s${a.status}`}>
        {STATUS[a.status]}
        {a.queuePosition ? ` #${a.queuePosition}` : ""}
      </td>
    ),
  },
  progress: {
    head: "progress",
    cell: (a: Action) => (
      <td class="progress">
        <Bar action={a} />
      </td>
    ),
  },
  caller: { head: "caller", cell: (a: Action) => <td>{a.createdBy}</td> },
  server: { head: "server", cell: (a: Action) => <td>{a.server}</td> },
  created: { head: "created", cell: (a: Action) => <td class="num">{when(a.createTime)}</td> },
  duration: { head: "duration", cell: (a: Action) => <td class="num">{ended(a) ? duration(a, 0) : <Running action={a} />}</td> },
  error: { head: "error", cell: (a: Action) => <td class="error-code">{a.error?.code ?? ""}</td> },
};

export type Column = keyof typeof COLUMNS;

export function ActionsTable({ actions, columns, testId }: { actions: Action[]; columns: Column[]; testId: string }) {
  return (
    <table data-testid={testId}>
      <thead>
        <tr>
          <th>action</th>
          {columns.map((c) => (
            <th key={c}>{COLUMNS[c].head}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {actions.map((a) => (
          <tr key={a.id} data-status={STATUS_KEYS[a.status]}>
            <td>
              <a href={`#/actions/${a.id}`}>{a.id}</a>
            </td>
            {columns.map((c) => COLUMNS[c].cell(a))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** The clock the running actions' durations share: one timer, whatever their number. */
const ticks = new Set<() => void>();
setInterval(() => {
  for (const tick of ticks) tick();
}, 500);

/**
 * A running action's duration, ticking: only these cells render each tick, not the table
 * (which would also reset a filter being typed).
 */
function Running({ action }: { action: Action }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const tick = () => setNow(Date.now());
    ticks.add(tick);
    return () => {
      ticks.delete(tick);
    };
  }, []);
  return <>{duration(action, now)}</>;
}
