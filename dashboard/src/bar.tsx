/** An action's progress as a bar (from the plugin's report), or its latest state in short. */
import { type Action, ActionStatus } from "../../gen/plinth/v1/action_pb.ts";
import { fraction, json } from "./format.ts";

export function Bar({ action }: { action: Action }) {
  const f = action.status === ActionStatus.SUCCEEDED ? 1 : fraction(json(action.state));
  if (f === undefined) return <span class="muted">{action.state ? JSON.stringify(json(action.state)).slice(0, 40) : ""}</span>;
  return (
    <span class="bar" data-testid="progress" data-value={Math.round(f * 100)}>
      <span style={{ width: `${Math.round(f * 100)}%` }} />
      <em>{Math.round(f * 100)}%</em>
    </span>
  );
}
