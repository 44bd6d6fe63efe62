/**
 * The load for bench/store.ts, in its own process so that it does not weigh on the
 * server's event loop: `writer.ts <port> paced <per second> <seconds>` or
 * `writer.ts <port> flood <in flight> <seconds>`. Sends AddInstance calls of 1 KiB
 * and reports { done, seconds } to its parent. Protocol: "ready" → parent sends "go"
 * → the load → { done, seconds }.
 */
import { createChannel, createClient } from "nice-grpc";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { niceDefinition } from "../server/rpc/service-definition.ts";

const [port, mode, amount, secondsArg] = process.argv.slice(2);
const channel = createChannel(`127.0.0.1:${port}`);
const engine = createClient(niceDefinition(EngineService), channel);
const instance = new TextEncoder().encode(JSON.stringify("x".repeat(1022)));
const add = () => engine.addInstance({ modelType: "bench.Trivial", instance });
const ms = Number(secondsArg) * 1000;
// Connected and warm: tell the parent, and start when it says so (its measurement
// must not include this process's own start-up).
await add();
process.send!("ready");
await new Promise((resolve) => process.once("message", resolve));
let done = 0;
const start = performance.now();
if (mode === "paced") {
  // One call every 1/rate s, on schedule whatever the answers' latency.
  const rate = Number(amount);
  const pending: Promise<unknown>[] = [];
  for (let i = 0; performance.now() - start < ms; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(add().then(() => done++));
  }
  await Promise.all(pending);
} else {
  await Promise.all(
    Array.from({ length: Number(amount) }, async () => {
      while (performance.now() - start < ms) {
        await add();
        done++;
      }
    }),
  );
}
const seconds = (performance.now() - start) / 1000;
channel.close();
process.send!({ done, seconds }, () => process.exit(0));
