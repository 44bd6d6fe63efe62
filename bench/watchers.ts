/**
 * Watchers for bench/watch.ts, in their own process so that the clients' decoding does
 * not queue behind each other in one event loop: `watchers.ts <port> <count> [grpc|connect]`
 * (connect: the Connect protocol on the HTTP listener's port, as a browser would watch).
 * Protocol with the parent: "ready" once every stream has its snapshot → "start" →
 * measure → "stop" → { delivered, latencies, views }.
 */
import { setMaxListeners } from "node:events";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createClient as createConnectClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createChannel, createClient } from "nice-grpc";
import { ChangeKind, StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { niceDefinition } from "../server/rpc/service-definition.ts";

const [port, count] = process.argv.slice(2, 4).map(Number);
const protocol = process.argv[4] ?? "grpc";
const channel = createChannel(`127.0.0.1:${port}`);
const state =
  protocol === "connect"
    ? createConnectClient(StateService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }))
    : createClient(niceDefinition(StateService), channel);
const controller = new AbortController();
setMaxListeners(0, controller.signal);
let measuring = false;
let delivered = 0;
const latencies: number[] = [];
/** Per watcher: action id → [status, last reported i]. */
const views: Record<string, [number, number]>[] = [];
let ready = 0;
const streams = Array.from({ length: count! }, async (_, w) => {
  const view: Record<string, [number, number]> = {};
  views[w] = view;
  try {
    for await (const message of state.watchState({ kinds: [ChangeKind.ACTION_UPSERTED] }, { signal: controller.signal })) {
      const now = Date.now();
      const event = message.event;
      if (event.case === "snapshot" && ++ready === count) process.send!("ready");
      if (event.case !== "actionUpserted") continue;
      const a = event.value;
      const i = a.state?.kind.case === "structValue" ? a.state.kind.value.fields.i : undefined;
      view[a.id] = [a.status, i?.kind.case === "numberValue" ? i.kind.value : 0];
      if (measuring && a.updateTime) {
        delivered++;
        latencies.push(now - (Number(a.updateTime.seconds) * 1000 + a.updateTime.nanos / 1e6));
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  }
});
/** This process's own load while measuring: its CPU time and its event loop's delay. */
const loop = monitorEventLoopDelay({ resolution: 5 });
let cpu = { user: 0, system: 0 };
let measured = 0;
process.on("message", async (m) => {
  if (m === "start") {
    measuring = true;
    loop.enable();
    cpu = process.cpuUsage();
    measured = performance.now();
  }
  if (m === "stop") {
    measuring = false;
    loop.disable();
    const used = process.cpuUsage(cpu);
    cpu = { user: used.user, system: used.system };
    measured = performance.now() - measured;
  }
  if (m === "report")
    process.send!({
      delivered,
      latencies,
      views,
      cpuShare: (cpu.user + cpu.system) / 1000 / measured,
      loopDelay: [loop.percentile(50) / 1e6, loop.percentile(95) / 1e6, loop.max / 1e6],
    });
  if (m === "close") {
    controller.abort();
    await Promise.all(streams);
    channel.close();
    process.exit(0);
  }
});
