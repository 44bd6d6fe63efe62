/**
 * A table of actions, each row a link to its page: the columns a page asks for, of call,
 * model type, model, status, progress, caller, server, created, duration and error code.
 * A running action's duration ticks in its own cell on one shared clock.
 */
import { Component, type VNode } from "preact";
import { useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { Bar } from "./bar.tsx";
import { CALL, duration, ended, STATUS, STATUS_KEYS, since, startedAt, when } from "./format.ts";

/** The action id's column, windowed: an id whole. */
const ID_WIDTH = "14rem";

/**
 * Each column's head, width and cell. A short table sizes its columns to what they hold; a
 * long one, windowed, at these widths (table-layout: fixed), so that rows coming and going
 * move no column: a longer text is cut there, whole in its title.
 */
const COLUMNS = {
  call: { head: "call", width: "4.5rem", cell: (a: Action) => <td>{CALL[a.call]}</td> },
  type: { head: "model type", width: "10rem", cell: (a: Action) => <td title={a.modelType}>{a.modelType}</td> },
  model: {
    head: "model",
    width: "14rem",
    cell: (a: Action) => <td title={a.modelId}>{a.modelId && <a href={`#/models/${a.modelId}`}>{a.modelId}</a>}</td>,
  },
  status: {
    head: "status",
    width: "9rem",
    cell: (a: Action) => (
      <td class={`status s${a.status}`}>
        {STATUS[a.status]}
        {a.queuePosition ? ` #${a.queuePosition}` : ""}
      </td>
    ),
  },
  progress: {
    head: "progress",
    width: "11rem",
    cell: (a: Action) => (
      <td class="progress">
        <Bar action={a} />
      </td>
    ),
  },
  caller: { head: "caller", width: "7rem", cell: (a: Action) => <td title={a.createdBy}>{a.createdBy}</td> },
  server: { head: "server", width: "7rem", cell: (a: Action) => <td title={a.server}>{a.server}</td> },
  created: { head: "created", width: "10rem", cell: (a: Action) => <td class="num">{when(a.createTime)}</td> },
  duration: {
    head: "duration",
    width: "6.5rem",
    cell: (a: Action) => <td class="num">{ended(a) ? duration(a, 0) : <Running action={a} />}</td>,
  },
  error: {
    head: "error",
    width: "8rem",
    cell: (a: Action) => (
      <td class="error-code" title={a.error?.code}>
        {a.error?.code ?? ""}
      </td>
    ),
  },
};

export type Column = keyof typeof COLUMNS;

/** Past this many rows, only those near the window are in the page. */
const WINDOWED = 150;
/** Rows kept above and below the window, so a short scroll shows rows already there. */
const OVERSCAN = 5;

/**
 * The table, windowed when long: with 1,000 live actions a full table's layout alone takes
 * longer than a frame at every change, so only the rows near the window are rendered,
 * between spacers that keep the scroll bar true. The row that has the keyboard's focus
 * stays rendered wherever the page scrolls, so that the focus stays on it. `data-rows` says
 * how many there are.
 */
export function ActionsTable({ actions, columns, testId }: { actions: Action[]; columns: Column[]; testId: string }) {
  const body = useRef<HTMLTableSectionElement>(null);
  const rowPx = useRef(30);
  const [focused, setFocused] = useState<string>();
  const [range, setRange] = useState({ from: 0, to: WINDOWED });
  const windowed = actions.length > WINDOWED;
  useLayoutEffect(() => {
    if (!windowed) return;
    const measured = body.current?.querySelector<HTMLElement>("tr[data-status]")?.offsetHeight;
    if (measured) rowPx.current = measured;
    const onScroll = () => {
      const top = body.current?.getBoundingClientRect().top ?? 0;
      const from = Math.max(0, Math.floor(-top / rowPx.current) - OVERSCAN);
      const to = Math.ceil((innerHeight - top) / rowPx.current) + OVERSCAN;
      setRange((was) => (was.from === from && was.to === to ? was : { from, to }));
    };
    onScroll();
    addEventListener("scroll", onScroll, { passive: true });
    addEventListener("resize", onScroll, { passive: true });
    return () => {
      removeEventListener("scroll", onScroll);
      removeEventListener("resize", onScroll);
    };
  }, [windowed]);
  const from = windowed ? Math.min(range.from, actions.length) : 0;
  const to = windowed ? Math.min(range.to, actions.length) : actions.length;
  // The focused row, when the window has left it: rendered alone, between spacers.
  const at = windowed && focused !== undefined ? actions.findIndex((a) => a.id === focused) : -1;
  const apart = at >= 0 && (at < from || at >= to) ? at : undefined;
  const shown = [
    ...(apart !== undefined && apart < from ? [apart] : []),
    ...indices(from, to),
    ...(apart !== undefined && apart >= to ? [apart] : []),
  ];
  // Each row's place, for a screen reader in a windowed table: set on the rows as they are,
  // not as a prop (a new action on top would render every row again for its number).
  useLayoutEffect(() => {
    const rows = body.current?.querySelectorAll<HTMLElement>("tr[data-status]") ?? [];
    rows.forEach((row, i) => {
      const index = String(shown[i]! + 2);
      if (row.getAttribute("aria-rowindex") !== index) row.setAttribute("aria-rowindex", index);
    });
  });
  // Which row has the focus: a row leaving the window keeps it. Focus moved to something
  // else clears it; focus to nothing (a click on the page, another window) does not.
  const onFocusIn = (event: FocusEvent) => setFocused((event.target as HTMLElement).closest<HTMLElement>("tr[data-id]")?.dataset.id);
  const onFocusOut = (event: FocusEvent) => {
    const to = event.relatedTarget as Node | null;
    if (to && !body.current?.contains(to)) setFocused(undefined);
  };
  // Focus this render took from its row (moved in the list) goes back to it, and only that.
  const hadFocus = body.current?.contains(document.activeElement) ?? false;
  useLayoutEffect(() => {
    if (!hadFocus || focused === undefined || body.current?.contains(document.activeElement)) return;
    body.current?.querySelector<HTMLElement>(`tr[data-id="${CSS.escape(focused)}"] a`)?.focus({ preventScroll: true });
  });
  // The rows as `shown` lists them, a spacer for each gap: one keyed list, so that the
  // focused row's node is kept as the window moves past it.
  const rendered: VNode[] = [];
  let next = 0;
  let gaps = 0;
  const spacer = (rows: number) => rendered.push(<tr key={`gap-${gaps++}`} class="spacer" style={{ height: `${rows * rowPx.current}px` }} />);
  for (const i of shown) {
    if (i > next) spacer(i - next);
    rendered.push(<Row key={actions[i]!.id} action={actions[i]!} columns={columns} />);
    next = i + 1;
  }
  if (next < actions.length) spacer(actions.length - next);
  return (
    <table
      class={windowed ? "actions windowed" : "actions"}
      data-testid={testId}
      data-rows={actions.length}
      aria-rowcount={actions.length + 1}
      // Windowed, as wide as its columns: narrower, the page scrolls sideways rather than squeezing them.
      style={windowed ? { minWidth: `calc(${[ID_WIDTH, ...columns.map((c) => COLUMNS[c].width)].join(" + ")})` } : undefined}
    >
      {windowed && (
        <colgroup>
          <col style={{ width: ID_WIDTH }} />
          {columns.map((c) => (
            <col key={c} style={{ width: COLUMNS[c].width }} />
          ))}
        </colgroup>
      )}
      <thead>
        <tr aria-rowindex={1}>
          <th>action</th>
          {columns.map((c) => (
            <th key={c}>{COLUMNS[c].head}</th>
          ))}
        </tr>
      </thead>
      <tbody ref={body} onFocusIn={onFocusIn} onFocusOut={onFocusOut}>
        {rendered}
      </tbody>
    </table>
  );
}

interface RowProps {
  action: Action;
  columns: Column[];
}

/**
 * One action's row, rendered again only when its action changed: the live state replaces
 * the view of an action that changed and keeps the others, so with 1,000 live actions an
 * update renders the few rows it touched, not the table.
 */
class Row extends Component<RowProps> {
  override shouldComponentUpdate(next: RowProps): boolean {
    return next.action !== this.props.action || next.columns.join() !== this.props.columns.join();
  }
  override render({ action: a, columns }: RowProps) {
    return (
      <tr data-status={STATUS_KEYS[a.status]} data-id={a.id}>
        <td>
          <a href={`#/actions/${a.id}`}>{a.id}</a>
        </td>
        {columns.map((c) => COLUMNS[c].cell(a))}
      </tr>
    );
  }
}

/**
 * A running action's duration, ticking: one timer writes every such cell's text each
 * second, with no render at all (a render of each would cost as much as the table's).
 */
function Running({ action }: { action: Action }) {
  const from = startedAt(action);
  return <span data-running-from={from}>{since(from, Date.now())}</span>;
}

setInterval(() => {
  const now = Date.now();
  for (const cell of document.querySelectorAll<HTMLElement>("[data-running-from]")) {
    // The text node preact made, changed in place: its next render of the row writes it again.
    const text = cell.firstChild;
    if (text instanceof Text) text.data = since(Number(cell.dataset.runningFrom), now);
  }
}, 1000);

/** The numbers from `from` up to `to`, not included. */
function indices(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
