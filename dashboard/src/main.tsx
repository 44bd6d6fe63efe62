/**
 * Plinth's dashboard: the actions (live, then the history, filtered by the URL), an
 * action's page with Cancel, models, plugins and a form to run create, fit and predict.
 * Pages by the URL's hash: #/ (actions; #/?status=failed&type=… filtered),
 * #/actions/<id>, #/models (#/models/<id>: one model), #/plugins, #/servers.
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { followState, type Live, token } from "./api.ts";
import { listenToKeys, PAGES, SHORTCUTS } from "./keys.ts";
import { feedLoad } from "./load.ts";
import { ActionPage } from "./pages/action.tsx";
import { ActionsPage } from "./pages/actions.tsx";
import { ModelPage } from "./pages/model.tsx";
import { ModelsPage } from "./pages/models.tsx";
import { PluginsPage } from "./pages/plugins.tsx";
import { ServersPage } from "./pages/servers.tsx";
import "./style.css";

function App() {
  const [live, setLive] = useState<Live>({ models: new Map(), actions: new Map(), revision: 0n });
  const [connection, setConnection] = useState<{ up: boolean; why?: string }>({ up: true });
  const [hash, setHash] = useState(location.hash);
  const [key, setKey] = useState(token.get());
  const [remember, setRemember] = useState(token.remembered());
  const [help, setHelp] = useState(false);
  useEffect(() => listenToKeys((show) => setHelp((shown) => show ?? !shown)), []);
  useEffect(() => {
    const onHash = () => setHash(location.hash);
    addEventListener("hashchange", onHash);
    const stop = new AbortController();
    // The state as of each frame: a burst of changes (hundreds a second with many live
    // actions) is one render, not one each.
    let pending: Live | undefined;
    const onLive = (next: Live) => {
      // The load's sampler reads it at once: a tab in the background runs no frames.
      feedLoad(next);
      if (pending === undefined)
        requestAnimationFrame(() => {
          setLive(pending!);
          pending = undefined;
        });
      pending = next;
    };
    // Called at every message: a new object only when it changed, else each would render the page.
    const onConnected = (up: boolean, why?: string) =>
      setConnection((was) => (was.up === up && was.why === why ? was : why === undefined ? { up } : { up, why }));
    void followState(onLive, onConnected, stop.signal);
    return () => {
      removeEventListener("hashchange", onHash);
      stop.abort();
    };
  }, [key]);
  const [path = "", query = ""] = hash.replace(/^#/, "").split("?");
  const [, page, id] = path.split("/");
  const section = PAGES.find(([, name]) => name === page)?.[1] ?? "actions";
  return (
    <>
      <button type="button" class="skip" onClick={() => document.getElementById("main")?.focus()}>
        Skip to the page
      </button>
      <header>
        <strong>Plinth</strong>
        <nav aria-label="pages">
          {PAGES.map(([href, name]) => (
            <a key={name} href={href} aria-current={name === section ? "page" : undefined}>
              {name}
            </a>
          ))}
        </nav>
        <button type="button" class="keys" aria-label="keyboard shortcuts" title="keyboard shortcuts (?)" onClick={() => setHelp(!help)}>
          ?
        </button>
        <form class="token" onSubmit={(e) => e.preventDefault()}>
          <input
            type="password"
            name="token"
            autocomplete="off"
            placeholder="token (when the server asks for one)"
            value={key}
            onChange={(e) => {
              token.set((e.target as HTMLInputElement).value, remember);
              setKey(token.get());
            }}
          />
          <label title="keep the token in this browser after the tab is closed (localStorage)">
            <input
              type="checkbox"
              name="remember"
              checked={remember}
              onChange={(e) => {
                const keep = (e.target as HTMLInputElement).checked;
                setRemember(keep);
                token.set(key, keep);
              }}
            />{" "}
            remember
          </label>
        </form>
      </header>
      {!connection.up && (
        <div class="banner" data-testid="banner">
          Connection to the server lost — reconnecting… {connection.why}
        </div>
      )}
      {help && (
        <div class="help" role="dialog" aria-label="keyboard shortcuts" data-testid="shortcuts">
          <dl>
            {SHORTCUTS.map(([keys, what]) => (
              <>
                <dt>
                  <kbd>{keys}</kbd>
                </dt>
                <dd>{what}</dd>
              </>
            ))}
          </dl>
        </div>
      )}
      <main id="main" tabIndex={-1}>
        {page === "actions" && id ? (
          <ActionPage id={id} live={live} />
        ) : page === "models" && id ? (
          <ModelPage id={id} live={live} />
        ) : page === "models" ? (
          <ModelsPage live={live} />
        ) : page === "plugins" ? (
          <PluginsPage live={live} />
        ) : page === "servers" ? (
          <ServersPage live={live} />
        ) : (
          <ActionsPage live={live} query={query} />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
