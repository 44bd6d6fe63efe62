/**
 * Plinth's dashboard: live actions with their progress, an action's page with Cancel,
 * models, plugins and a form to run create, fit and predict. Pages by the URL's hash:
 * #/ (actions), #/actions/<id>, #/models, #/plugins.
 */
import { type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { type Action, ActionStatus, ActionView } from "../../gen/plinth/v1/action_pb.ts";
import type { Arg } from "../../gen/plinth/v1/arg_pb.ts";
import type { Plugin, Server } from "../../gen/plinth/v1/engine_service_pb.ts";
import { actions, engine, errorText, followState, jsonArgs, type Live, token } from "./api.ts";
import "./style.css";

const STATUS = ["", "queued", "accessing data", "executing", "storing", "succeeded", "failed", "cancelled"];
const CALL = ["", "create", "fit", "predict"];
const ended = (a: Action) => a.status >= ActionStatus.SUCCEEDED;
const json = (v: Parameters<typeof toJson>[1] | undefined) => (v ? (toJson(ValueSchema, v as never) as JsonValue) : undefined);

/** 0–1 from the plugin's report: `progress`, or `done`/`total`. */
function fraction(state: JsonValue | undefined): number | undefined {
  if (!state || typeof state !== "object" || Array.isArray(state)) return undefined;
  const { progress, done, total } = state as Record<string, JsonValue>;
  if (typeof progress === "number") return Math.min(1, Math.max(0, progress));
  if (typeof done === "number" && typeof total === "number" && total > 0) return Math.min(1, done / total);
  return undefined;
}

function Bar({ action }: { action: Action }) {
  const f = action.status === ActionStatus.SUCCEEDED ? 1 : fraction(json(action.state));
  if (f === undefined) return <span class="muted">{action.state ? JSON.stringify(json(action.state)).slice(0, 40) : ""}</span>;
  return (
    <span class="bar" data-testid="progress" data-value={Math.round(f * 100)}>
      <span style={{ width: `${Math.round(f * 100)}%` }} />
      <em>{Math.round(f * 100)}%</em>
    </span>
  );
}

function seconds(a: Action, now: number): string {
  const ms = (t: Action["createTime"]) => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : now);
  return `${((ms(a.endTime) - ms(a.startTime ?? a.createTime)) / 1000).toFixed(1)} s`;
}

function ActionsPage({ live }: { live: Live }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, []);
  const list = [...live.actions.values()].sort((a, b) => Number(ended(a)) - Number(ended(b)) || b.id.localeCompare(a.id));
  return (
    <table data-testid="actions">
      <thead>
        <tr>
          <th>action</th>
          <th>call</th>
          <th>model</th>
          <th>status</th>
          <th title="priority: 1 highest … 5">pri</th>
          <th>progress</th>
          <th>data</th>
          <th>time</th>
        </tr>
      </thead>
      <tbody>
        {list.map((a) => (
          <tr key={a.id} data-status={STATUS[a.status]}>
            <td>
              <a href={`#/actions/${a.id}`}>{a.id}</a>
            </td>
            <td>{CALL[a.call]}</td>
            <td>{a.modelId || a.modelType}</td>
            <td class={`status s${a.status}`}>
              {STATUS[a.status]}
              {a.queuePosition ? ` #${a.queuePosition}` : ""}
            </td>
            <td>{a.priority || 3}</td>
            <td>
              <Bar action={a} />
            </td>
            <td>{a.dataAccess.length ? `${a.dataAccess.filter((d) => d.status === ActionStatus.SUCCEEDED).length}/${a.dataAccess.length}` : ""}</td>
            <td>{seconds(a, now)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function argText(arg: Arg): string {
  const k = arg.kind;
  if (k.case === "json") return JSON.stringify(json(k.value));
  if (k.case === "jsonText") return k.value;
  if (k.case === "summary") return `(${k.value.sizeBytes} bytes${k.value.prefix ? `: ${k.value.prefix}…` : ""})`;
  if (k.case === "bytes") return `(${k.value.byteLength} bytes)`;
  if (k.case === "tensor") return `(tensor ${k.value.shape.join("×")})`;
  if (k.case === "dataAccess") return `@${k.value.name}`;
  if (k.case === "list") return `[${k.value.items.map(argText).join(", ")}]`;
  if (k.case === "map") {
    return `{${Object.entries(k.value.entries)
      .map(([key, v]) => `${key}: ${argText(v)}`)
      .join(", ")}}`;
  }
  return "";
}

function ActionPage({ id, live }: { id: string; live: Live }) {
  const [fetched, setFetched] = useState<Action | undefined>();
  const [error, setError] = useState("");
  const current = live.actions.get(id);
  useEffect(() => {
    // The result in full once it has ended (the live state shows large ones in summary).
    if (current && !ended(current)) return;
    actions.getAction({ actionId: id, view: ActionView.RESULT }).then(
      (r) => setFetched(r.action),
      (e: unknown) => setError(errorText(e)),
    );
  }, [id, current?.status]);
  const a = current && !ended(current) ? current : (fetched ?? current);
  if (!a) return <p class="error">{error || "loading…"}</p>;
  const cancel = () =>
    actions.cancelAction({ actionId: id }).then(
      (r) => setFetched(r.action),
      (e: unknown) => setError(errorText(e)),
    );
  return (
    <div class="action" data-testid="action">
      <h2>
        {CALL[a.call]} {a.modelType}{" "}
        <span class={`status s${a.status}`} data-testid="status">
          {STATUS[a.status]}
        </span>
      </h2>
      {!ended(a) && (
        <button type="button" data-testid="cancel" onClick={cancel}>
          Cancel
        </button>
      )}
      {error && <p class="error">{error}</p>}
      <dl>
        <dt>action</dt>
        <dd>{a.id}</dd>
        <dt>model</dt>
        <dd>{a.modelId}</dd>
        <dt>by</dt>
        <dd>{a.createdBy || "—"}</dd>
        <dt>priority</dt>
        <dd>{a.priority || 3}</dd>
        {a.server && (
          <>
            <dt>server</dt>
            <dd>{a.server}</dd>
          </>
        )}
        {a.retry && (
          <>
            <dt>attempt</dt>
            <dd data-testid="attempt">
              {a.attempt || 1} of {a.retry.maxAttempts}
              {a.nextAttemptTime && ` — the next at ${timestampDate(a.nextAttemptTime).toLocaleTimeString()}`}
            </dd>
          </>
        )}
        {a.attempts.map((t) => (
          <>
            <dt>attempt {t.attempt}</dt>
            <dd class="error">
              {t.error?.code}: {t.error?.message}
              {t.server && ` (on ${t.server})`}
            </dd>
          </>
        ))}
        {a.checkpoint && (
          <>
            <dt>checkpoint</dt>
            <dd>
              {String(a.checkpoint.size)} B from attempt {a.checkpoint.attempt}
              {a.checkpoint.value && (
                <>
                  {" "}
                  <code>{argText(a.checkpoint.value)}</code>
                </>
              )}
            </dd>
          </>
        )}
        <dt>progress</dt>
        <dd>
          <Bar action={a} />
        </dd>
        <dt>arguments</dt>
        <dd>
          <code>
            [{a.args.map(argText).join(", ")}]{" "}
            {Object.entries(a.kwargs)
              .map(([k, v]) => `${k}=${argText(v)}`)
              .join(" ")}
          </code>
        </dd>
        {a.dataAccess.map((d) => (
          <>
            <dt>{d.argument}</dt>
            <dd>
              @{d.name}: {STATUS[d.status]}
            </dd>
          </>
        ))}
        {a.state && (
          <>
            <dt>state</dt>
            <dd>
              <code>{JSON.stringify(json(a.state))}</code>
            </dd>
          </>
        )}
        {a.result?.model && (
          <>
            <dt>result</dt>
            <dd>
              model {a.result.model.id} revision {String(a.result.model.revision)}
            </dd>
          </>
        )}
        {a.result?.prediction && (
          <>
            <dt>prediction</dt>
            <dd>
              <code data-testid="prediction">{argText(a.result.prediction)}</code>
            </dd>
          </>
        )}
        {a.cancel && (
          <>
            <dt>cancel</dt>
            <dd data-testid="cancel-outcome">
              by {a.cancel.by}
              {a.cancel.cancelledBy ? ` (${a.cancel.cancelledBy})` : ""} while {STATUS[a.cancel.phase]}
              {a.cancel.forced ? ", SIGKILL needed" : ""}
              {a.cancel.signal ? `, child ${a.cancel.signal}` : ""}
            </dd>
          </>
        )}
      </dl>
      {a.error && (
        <div class="error" data-testid="error">
          <strong>{a.error.code}</strong>: {a.error.message}
          {a.error.stack && <pre>{a.error.stack}</pre>}
        </div>
      )}
      {a.logTail.length > 0 && <pre class="log">{a.logTail.join("\n")}</pre>}
    </div>
  );
}

function ModelsPage({ live }: { live: Live }) {
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

/** The JSON Schemas a function's calls declare: what to put in the form's args and kwargs. */
function Schemas({ of }: { of: Plugin["modelTypes"][number] }) {
  if (of.schemas.length === 0) return null;
  return (
    <details data-testid={`schemas-${of.name}`}>
      <summary>arguments</summary>
      {of.schemas.map((c) => (
        <div key={c.call}>
          <strong>{c.call}</strong>
          {(["args", "kwargs", "state"] as const).map((part) =>
            c[part] ? (
              <pre key={part}>
                {part}: {JSON.stringify(c[part], null, 2)}
              </pre>
            ) : null,
          )}
        </div>
      ))}
    </details>
  );
}

function PluginsPage() {
  const [plugins, setPlugins] = useState<Plugin[]>([]);
  const [servers, setServers] = useState<Server[]>([]);
  const [error, setError] = useState("");
  const [call, setCall] = useState("create");
  const [target, setTarget] = useState("");
  const [args, setArgs] = useState("[]");
  const [kwargs, setKwargs] = useState("{}");
  useEffect(() => {
    engine.listPlugins({}).then(
      (r) => {
        setPlugins(r.plugins);
        setServers(r.servers);
      },
      (e: unknown) => setError(errorText(e)),
    );
  }, []);
  const run = async (event: Event) => {
    event.preventDefault();
    setError("");
    try {
      const a = jsonArgs(JSON.parse(args) as JsonValue[]);
      const k = Object.fromEntries(Object.entries(JSON.parse(kwargs) as Record<string, JsonValue>).map(([name, v]) => [name, jsonArgs([v])[0]!]));
      const started =
        call === "create"
          ? await engine.createInstance({ modelType: target, args: a, kwargs: k })
          : call === "fit"
            ? await engine.fit({ modelId: target, args: a, kwargs: k })
            : await engine.predict({ modelId: target, args: a, kwargs: k });
      location.hash = `#/actions/${started.action!.id}`;
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <>
      <form data-testid="run" onSubmit={run}>
        <select name="call" value={call} onChange={(e) => setCall((e.target as HTMLSelectElement).value)}>
          <option value="create">create (model type)</option>
          <option value="fit">fit (model id)</option>
          <option value="predict">predict (model id)</option>
        </select>
        <input name="target" placeholder="systest.Model or m-…" value={target} onInput={(e) => setTarget((e.target as HTMLInputElement).value)} />
        <input name="args" placeholder="args, a JSON array" value={args} onInput={(e) => setArgs((e.target as HTMLInputElement).value)} />
        <input name="kwargs" placeholder="kwargs, a JSON object" value={kwargs} onInput={(e) => setKwargs((e.target as HTMLInputElement).value)} />
        <button type="submit">Run</button>
      </form>
      {error && (
        <p class="error" data-testid="run-error">
          {error}
        </p>
      )}
      {servers.length > 0 && (
        <section data-testid="servers">
          <h3>Servers</h3>
          <ul>
            {servers.map((s) => (
              <li key={s.name}>
                <strong>{s.name}</strong> {s.thisServer ? "(this one) " : ""}
                <span class="muted">
                  {s.address} · {s.host} pid {s.pid}
                </span>{" "}
                — {s.modelTypes.join(", ")}
              </li>
            ))}
          </ul>
        </section>
      )}
      {plugins.map((p) => (
        <section key={p.name}>
          <h3>
            {p.name} <span class="muted">({p.runtime})</span>
          </h3>
          <p>{p.description}</p>
          {p.reloadError && <p class="error">its changed code does not load; the previous version serves: {p.reloadError}</p>}
          <ul>
            {p.modelTypes.map((m) => (
              <li key={m.name}>
                <strong>{m.name}</strong> — {m.description}
                <Schemas of={m} />
              </li>
            ))}
            {p.dataAccess.map((d) => (
              <li key={d.name}>
                <em>@{d.name}</em> — {d.description}
                <Schemas of={d} />
              </li>
            ))}
          </ul>
        </section>
      ))}
    </>
  );
}

function App() {
  const [live, setLive] = useState<Live>({ models: new Map(), actions: new Map(), revision: 0n });
  const [connection, setConnection] = useState<{ up: boolean; why?: string }>({ up: true });
  const [hash, setHash] = useState(location.hash);
  const [key, setKey] = useState(token.get());
  useEffect(() => {
    const onHash = () => setHash(location.hash);
    addEventListener("hashchange", onHash);
    const stop = new AbortController();
    void followState(setLive, (up, why) => setConnection(why === undefined ? { up } : { up, why }), stop.signal);
    return () => {
      removeEventListener("hashchange", onHash);
      stop.abort();
    };
  }, [key]);
  const [, page, id] = hash.split("/");
  return (
    <>
      <header>
        <strong>Plinth</strong>
        <a href="#/">actions</a>
        <a href="#/models">models</a>
        <a href="#/plugins">plugins</a>
        <form class="token" onSubmit={(e) => e.preventDefault()}>
          <input
            type="password"
            autocomplete="off"
            placeholder="token (when the server asks for one)"
            value={key}
            onChange={(e) => {
              token.set((e.target as HTMLInputElement).value);
              setKey(token.get());
            }}
          />
        </form>
      </header>
      {!connection.up && (
        <div class="banner" data-testid="banner">
          Connection to the server lost — reconnecting… {connection.why}
        </div>
      )}
      <main>
        {page === "actions" && id ? (
          <ActionPage id={id} live={live} />
        ) : page === "models" ? (
          <ModelsPage live={live} />
        ) : page === "plugins" ? (
          <PluginsPage />
        ) : (
          <ActionsPage live={live} />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
