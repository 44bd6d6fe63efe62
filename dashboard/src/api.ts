/**
 * The dashboard's connection to the server: Connect clients of the three services on
 * the page's own origin (a token, when the server wants one, from the session's storage), and
 * the live state from WatchState, resumed from the last revision after a disconnect.
 */
import { ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { Action } from "../../gen/plinth/v1/action_pb.ts";
import { ActionService } from "../../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../../gen/plinth/v1/engine_service_pb.ts";
import type { Model } from "../../gen/plinth/v1/model_pb.ts";
import { StateService } from "../../gen/plinth/v1/state_service_pb.ts";

const TOKEN_KEY = "plinth.token";
/**
 * The token: kept for this tab's session (sessionStorage), unless the user asks to remember
 * it in this browser (localStorage), where any script of the origin could read it later.
 */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) ?? localStorage.getItem(TOKEN_KEY) ?? "",
  remembered: () => localStorage.getItem(TOKEN_KEY) !== null,
  set(value: string, remember: boolean) {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    if (value) (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, value);
  },
};

const bearer: Interceptor = (next) => (request) => {
  const t = token.get();
  if (t) request.header.set("authorization", `Bearer ${t}`);
  return next(request);
};

// The binary format: the live state's stream decodes in a fifth of JSON's time (the page
// keeps up with a thousand live actions).
const transport = createConnectTransport({
  baseUrl: new URL(".", location.href).href.replace(/\/$/, ""),
  interceptors: [bearer],
  useBinaryFormat: true,
});
export const engine = createClient(EngineService, transport);
export const actions = createClient(ActionService, transport);
const state = createClient(StateService, transport);

/** The server's own words for a failed call. */
export function errorText(error: unknown): string {
  return error instanceof ConnectError ? error.rawMessage : String(error);
}

export interface Live {
  models: Map<string, Model>;
  actions: Map<string, Action>;
  revision: bigint;
}

/**
 * Follows the state until `signal` aborts: `onChange` with the whole live state after
 * every message, `onConnected` when the stream is up or down. A dropped stream is opened
 * again every second, resuming from the last revision seen (a snapshot marked reset
 * replaces everything when the server no longer holds that far back).
 */
export async function followState(onChange: (live: Live) => void, onConnected: (up: boolean, why?: string) => void, signal: AbortSignal) {
  const live: Live = { models: new Map(), actions: new Map(), revision: 0n };
  let pages: { models: Model[]; actions: Action[] } | undefined;
  while (!signal.aborted) {
    try {
      for await (const message of state.watchState({ fromRevision: live.revision }, { signal })) {
        onConnected(true);
        const event = message.event;
        if (event.case === "snapshot") {
          pages ??= { models: [], actions: [] };
          pages.models.push(...event.value.models);
          pages.actions.push(...event.value.actions);
          if (message.more) continue;
          live.models = new Map(pages.models.map((m) => [m.id, m]));
          live.actions = new Map(pages.actions.map((a) => [a.id, a]));
          pages = undefined;
        } else if (event.case === "modelUpserted") live.models.set(event.value.id, event.value);
        else if (event.case === "modelDeleted") live.models.delete(event.value);
        else if (event.case === "actionUpserted") live.actions.set(event.value.id, event.value);
        live.revision = message.revision;
        onChange({ ...live });
      }
    } catch (error) {
      if (signal.aborted) return;
      onConnected(false, errorText(error));
    }
    pages = undefined;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
