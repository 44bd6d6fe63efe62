/** One action: its status, attempts, arguments, data access, result or error, log tail, and Cancel. */
import { timestampDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { type Action, ActionView } from "../../../gen/plinth/v1/action_pb.ts";
import { actions, errorText, type Live } from "../api.ts";
import { Bar } from "../bar.tsx";
import { Charts, type Point } from "../chart.tsx";
import { argAt, savable, saveArg } from "../download.ts";
import { argText, CALL, duration, ended, json, STATUS } from "../format.ts";
import { Timeline } from "../timeline.tsx";

export function ActionPage({ id, live }: { id: string; live: Live }) {
  const [fetched, setFetched] = useState<Action | undefined>();
  const [error, setError] = useState("");
  // Cancel asks first: a click on it alone must not end an hour of fitting.
  const [confirming, setConfirming] = useState(false);
  const current = live.actions.get(id);
  // The states reported since the page fetched the action: the live state shows only the latest.
  const [since, setSince] = useState<Point[]>([]);
  useEffect(() => {
    // The result in full and the reported states so far (the live state carries neither):
    // at the start, and again once it has ended.
    if (current && !ended(current) && fetched?.id === id) return;
    actions.getAction({ actionId: id, view: ActionView.RESULT }).then(
      (r) => {
        setFetched(r.action);
        setSince([]);
      },
      (e: unknown) => setError(errorText(e)),
    );
  }, [id, current && ended(current)]);
  useEffect(() => {
    if (current?.state && !ended(current)) setSince((s) => [...s, { time: Date.now(), state: json(current.state) }]);
  }, [current?.state]);
  const a = current && !ended(current) ? current : (fetched ?? current);
  if (!a) return <p class="error">{error || "loading…"}</p>;
  const cancel = () => {
    setConfirming(false);
    actions.cancelAction({ actionId: id }).then(
      (r) => setFetched(r.action),
      (e: unknown) => setError(errorText(e)),
    );
  };
  return (
    <div class="action" data-testid="action">
      <h2>
        {CALL[a.call]} {a.modelType}{" "}
        <span class={`status s${a.status}`} data-testid="status">
          {STATUS[a.status]}
        </span>
      </h2>
      {!ended(a) && !confirming && (
        <button type="button" data-testid="cancel" onClick={() => setConfirming(true)}>
          Cancel
        </button>
      )}
      {!ended(a) && confirming && (
        <div
          class="confirm"
          role="alertdialog"
          aria-labelledby="confirm-text"
          data-testid="cancel-confirmation"
          onKeyDown={(e) => e.key === "Escape" && setConfirming(false)}
        >
          <span id="confirm-text">
            Cancel this {CALL[a.call]} of {a.modelType}? It has run {duration(a, Date.now())}; what it did so far is lost
            {a.retry ? " (no further attempt runs)" : ""}.
          </span>{" "}
          <button type="button" data-testid="cancel-confirm" onClick={cancel}>
            Yes, cancel it
          </button>{" "}
          <button type="button" data-testid="cancel-keep" autofocus onClick={() => setConfirming(false)}>
            Keep it running
          </button>
        </div>
      )}
      {a.redacted && (
        <p class="note" data-testid="redacted">
          Started by {a.createdBy || "another caller"}: its arguments, result and logs are shown to your token only in summary (the server's{" "}
          <code>server.auth.visibility</code>; the roles <code>read_all</code> and <code>admin</code> see them).
        </p>
      )}
      {error && <p class="error">{error}</p>}
      <dl>
        <dt>action</dt>
        <dd>{a.id}</dd>
        <dt>model</dt>
        <dd>{a.modelId ? <a href={`#/models/${a.modelId}`}>{a.modelId}</a> : "—"}</dd>
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
        <dt>timeline</dt>
        <dd>
          <Timeline action={a} />
        </dd>
        {(() => {
          const stored = (fetched?.id === id ? fetched.states : []).map((p) => ({ time: p.time ? timestampMs(p.time) : 0, state: json(p.state) }));
          const after = stored.at(-1)?.time ?? 0;
          const points = [...stored, ...(ended(a) ? [] : since.filter((p) => p.time > after))];
          return points.length > 1 ? (
            <>
              <dt>reported</dt>
              <dd>
                <Charts points={points} />
              </dd>
            </>
          ) : null;
        })()}
        <dt>arguments</dt>
        <dd>
          <code>
            [{a.args.map(argText).join(", ")}]{" "}
            {Object.entries(a.kwargs)
              .map(([k, v]) => `${k}=${argText(v)}`)
              .join(" ")}
          </code>
          <Downloads action={a} places={[...a.args.map((_, i) => `args[${i}]`), ...Object.keys(a.kwargs).map((k) => `kwargs.${k}`)]} />
        </dd>
        {a.dataAccess.map((d) => (
          <>
            <dt>{d.argument}</dt>
            <dd data-testid={`data-${d.argument}`}>
              @{d.name}: {STATUS[d.status]}
              {d.state && <code> {JSON.stringify(json(d.state))}</code>}
              {d.error && (
                <span class="error">
                  {" "}
                  {d.error.code}: {d.error.message}
                </span>
              )}
              {d.logTail.length > 0 && <pre class="log">{d.logTail.join("\n")}</pre>}
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
              <Downloads action={a} places={["prediction"]} />
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

/** A Save button for each of these arguments that is one file (bytes, a tensor, JSON), with what went wrong beside it. */
function Downloads({ action, places }: { action: Action; places: string[] }) {
  const [error, setError] = useState("");
  // Another caller's action, redacted: the server would send its summaries again.
  const files = action.redacted ? [] : places.filter((p) => savable(argAt(action, p)));
  if (files.length === 0) return null;
  const save = (place: string) =>
    saveArg(action, place).then(
      (e) => setError(e ?? ""),
      (e: unknown) => setError(errorText(e)),
    );
  return (
    <div class="downloads">
      {files.map((place) => (
        <button type="button" key={place} data-testid={`save-${place}`} onClick={() => save(place)}>
          Save {place}
        </button>
      ))}
      {error && <span class="error"> {error}</span>}
    </div>
  );
}
