/**
 * The actions: those running live on top (from the live state), then the history
 * (ListActions), newest first, a page at a time. The filters live in the URL
 * (#/?type=iris.DecisionTree&status=failed), so a view can be shared; the same filters
 * apply to both.
 */
import { timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import type { Action, ActionCall, ActionStatus } from "../../../gen/plinth/v1/action_pb.ts";
import { ActionsTable } from "../actions-table.tsx";
import { actions, errorText, type Live } from "../api.ts";
import { CALL, ended, STATUS, STATUS_KEYS } from "../format.ts";

/** The filters, as the URL writes them. */
export interface Filters {
  status?: string;
  call?: string;
  type?: string;
  model?: string;
  by?: string;
  server?: string;
  error?: string;
  /** datetime-local values: "2026-12-07T10:00". */
  since?: string;
  until?: string;
}

const KEYS: (keyof Filters)[] = ["status", "call", "type", "model", "by", "server", "error", "since", "until"];
const PAGE = 50;

export function filtersOf(query: string): Filters {
  const params = new URLSearchParams(query);
  return Object.fromEntries(KEYS.flatMap((k) => (params.get(k) ? [[k, params.get(k)!]] : []))) as Filters;
}

function hashOf(f: Filters): string {
  const params = new URLSearchParams(KEYS.flatMap((k) => (f[k] ? [[k, f[k]!]] : [])));
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

const statusOf = (f: Filters) => (f.status ? STATUS_KEYS.indexOf(f.status) : -1);
const callOf = (f: Filters) => (f.call ? CALL.indexOf(f.call) : -1);
const msOf = (local: string | undefined) => (local ? new Date(local).getTime() : undefined);

/** Whether a live action passes the filters, as ListActions would decide for a stored one. */
function matches(a: Action, f: Filters): boolean {
  const created = a.createTime ? timestampMs(a.createTime) : 0;
  return (
    (!f.status || a.status === statusOf(f)) &&
    (!f.call || a.call === callOf(f)) &&
    (!f.type || a.modelType === f.type) &&
    (!f.model || a.modelId === f.model) &&
    (!f.by || a.createdBy === f.by) &&
    (!f.server || a.server === f.server) &&
    (!f.error || a.error?.code === f.error) &&
    (msOf(f.since) === undefined || created >= msOf(f.since)!) &&
    (msOf(f.until) === undefined || created < msOf(f.until)!)
  );
}

function request(f: Filters, pageToken: string) {
  const since = msOf(f.since);
  const until = msOf(f.until);
  return {
    pageSize: PAGE,
    pageToken,
    statuses: statusOf(f) > 0 ? [statusOf(f) as ActionStatus] : [],
    calls: callOf(f) > 0 ? [callOf(f) as ActionCall] : [],
    modelType: f.type ?? "",
    modelId: f.model ?? "",
    createdBy: f.by ?? "",
    server: f.server ?? "",
    errorCode: f.error ?? "",
    ...(since === undefined ? {} : { createdAfter: timestampFromDate(new Date(since)) }),
    ...(until === undefined ? {} : { createdBefore: timestampFromDate(new Date(until)) }),
  };
}

export function ActionsPage({ live, query }: { live: Live; query: string }) {
  const filters = filtersOf(query);
  const [history, setHistory] = useState<Action[]>([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");
  const [search, setSearch] = useState("");
  // The history's first page, again whenever the filters change.
  useEffect(() => {
    let current = true;
    setError("");
    actions.listActions(request(filters, "")).then(
      (r) => {
        if (!current) return;
        setHistory(r.actions);
        setNext(r.nextPageToken);
      },
      (e: unknown) => current && setError(errorText(e)),
    );
    return () => {
      current = false;
    };
  }, [query]);
  const older = () =>
    actions.listActions(request(filters, next)).then(
      (r) => {
        setHistory((h) => [...h, ...r.actions]);
        setNext(r.nextPageToken);
      },
      (e: unknown) => setError(errorText(e)),
    );
  // From the URL as it is now: a change made just before may not have rendered yet.
  const set = (key: keyof Filters, value: string) => {
    location.hash = hashOf({ ...filtersOf(location.hash.split("?")[1] ?? ""), [key]: value || undefined });
  };
  // The live view of an action wins over the stored one: it is the newer.
  const rows = new Map<string, Action>();
  for (const a of history) rows.set(a.id, a);
  for (const a of live.actions.values())
    if (matches(a, filters) && (rows.has(a.id) || !ended(a) || history.length < PAGE || a.id > history.at(-1)!.id)) rows.set(a.id, a);
  // Ids sort by time (a plain comparison: localeCompare costs ten times as much, on every update).
  const list = [...rows.values()].sort((a, b) => Number(ended(a)) - Number(ended(b)) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const types = [...new Set([...live.models.values()].map((m) => m.modelType).concat(filters.type ?? []))].sort();
  const go = (event: Event) => {
    event.preventDefault();
    const id = search.trim();
    if (id.startsWith("a-")) location.hash = `#/actions/${id}`;
    else if (id) set("model", id);
  };
  // A text field, or another input type (the times): what is typed stays until it is committed.
  const text = (key: keyof Filters, placeholder: string, label: string, type = "text") => (
    <label>
      {label}
      <input
        name={key}
        type={type}
        key={filters[key] ?? ""}
        defaultValue={filters[key] ?? ""}
        placeholder={placeholder}
        onChange={(e) => set(key, (e.target as HTMLInputElement).value.trim())}
      />
    </label>
  );
  return (
    <>
      <form class="filters" data-testid="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          status
          <select name="status" value={filters.status ?? ""} onChange={(e) => set("status", (e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {STATUS_KEYS.slice(1).map((s, i) => (
              <option key={s} value={s}>
                {STATUS[i + 1]}
              </option>
            ))}
          </select>
        </label>
        <label>
          call
          <select name="call" value={filters.call ?? ""} onChange={(e) => set("call", (e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {CALL.slice(1).map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </label>
        <label>
          model type
          <input
            name="type"
            list="model-types"
            key={filters.type ?? ""}
            defaultValue={filters.type ?? ""}
            onChange={(e) => set("type", (e.target as HTMLInputElement).value.trim())}
          />
          <datalist id="model-types">
            {types.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        {text("model", "m-…", "model")}
        {text("by", "a token's name", "caller")}
        {text("server", "a cluster's server", "server")}
        {text("error", "plugin_error, …", "error code")}
        {text("since", "", "from", "datetime-local")}
        {text("until", "", "to", "datetime-local")}
        {Object.keys(filters).length > 0 && (
          <a href="#/" class="clear">
            clear
          </a>
        )}
      </form>
      <form class="search" onSubmit={go}>
        <input
          name="search"
          placeholder="an action's id (a-…) or a model's (m-…)"
          value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
        />
        <button type="submit">Find</button>
      </form>
      {error && (
        <p class="error" data-testid="list-error">
          {error}
        </p>
      )}
      <ActionsTable
        actions={list}
        testId="actions"
        columns={["call", "type", "model", "status", "progress", "caller", "server", "created", "duration", "error"]}
      />
      {list.length === 0 && !error && <p class="muted">No action matches.</p>}
      {next && (
        <button type="button" data-testid="older" onClick={older}>
          Older
        </button>
      )}
    </>
  );
}
