/**
 * Plinth's dashboard: the actions (live, then the history, filtered by the URL), an
 * action's page with Cancel, models, plugins and a form to run create, fit and predict.
 * Pages by the URL's hash: #/ (actions; #/?status=failed&type=… filtered),
 * #/actions/<id>, #/models (#/models/<id>: one model), #/plugins, #/servers.
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { followState, type Live, token } from "./api.ts";
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
  useEffect(() => {
    const onHash = () => setHash(location.hash);
    addEventListener("hashchange", onHash);
    const stop = new AbortController();
    const onLive = (next: Live) => {
      feedLoad(next);
      setLive(next);
    };
    void followState(onLive, (up, why) => setConnection(why === undefined ? { up } : { up, why }), stop.signal);
    return () => {
      removeEventListener("hashchange", onHash);
      stop.abort();
    };
  }, [key]);
  const [path = "", query = ""] = hash.replace(/^#/, "").split("?");
  const [, page, id] = path.split("/");
  return (
    <>
      <header>
        <strong>Plinth</strong>
        <a href="#/">actions</a>
        <a href="#/models">models</a>
        <a href="#/plugins">plugins</a>
        <a href="#/servers">servers</a>
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
