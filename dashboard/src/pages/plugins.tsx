/** The plugins the server loaded, their schemas, a cluster's servers, and a form to run create, fit and predict. */
import { useEffect, useState } from "preact/hooks";
import type { Plugin, Server } from "../../../gen/plinth/v1/engine_service_pb.ts";
import { engine, errorText, type Live } from "../api.ts";
import { RunForm } from "../run-form.tsx";

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

export function PluginsPage({ live }: { live: Live }) {
  const [plugins, setPlugins] = useState<Plugin[]>([]);
  const [servers, setServers] = useState<Server[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    engine.listPlugins({}).then(
      (r) => {
        setPlugins(r.plugins);
        setServers(r.servers);
      },
      (e: unknown) => setError(errorText(e)),
    );
  }, []);
  return (
    <>
      <RunForm plugins={plugins} models={live.models} />
      {error && (
        <p class="error" data-testid="plugins-error">
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
