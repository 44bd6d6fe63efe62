/**
 * A server stopped with engine.stop_grace_seconds drains: it refuses new actions with
 * UNAVAILABLE, answers reads and waits, lets what runs on it finish, then exits; in a
 * cluster the others take the new calls and the queue, so a rolling restart under load
 * ends no action cancelled or failed.
 */
import { once } from "node:events";
import { join } from "node:path";
import { ClientError, Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { type Action, ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { root } from "./helpers/server.ts";
import { clients, type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const started: ServerProcess[] = [];
const channels: { close(): void }[] = [];
afterEach(() => {
  for (const c of channels.splice(0)) c.close();
  for (const p of started.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
});

/** A server process with this backend, the system-test plugin and a grace of 60 s; its clients. */
async function server(backend: string[]) {
  const config = writeConfig(
    [
      "backend:",
      ...backend.map((line) => `  ${line}`),
      "engine:",
      "  max_children: 2",
      "  min_idle_workers: 0",
      // Far above what the tests' actions take: a drain that ends by its grace fails them.
      "  stop_grace_seconds: 60",
      "plugins:",
      `  - module: ${join(root, "plugins/system-test/mod.ts")}`,
    ].join("\n"),
  );
  const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
  started.push(p);
  const c = clients(await p.port);
  channels.push(c.channel);
  return { ...c, process: p };
}

/** Resolves once the server's output has a line matching `pattern`; rejects if it exits first. */
function logged(p: ServerProcess, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const look = () => {
      if (!pattern.test(p.output())) return false;
      p.child.stdout!.off("data", look);
      resolve();
      return true;
    };
    if (look()) return;
    p.child.stdout!.on("data", look);
    p.child.once("exit", () => reject(new Error(`the server exited without logging ${pattern}:\n${p.output()}`)));
  });
}

/** Resolves once the action is running. */
async function running(s: Awaited<ReturnType<typeof server>>, actionId: string): Promise<void> {
  for await (const { action } of s.actions.watchAction({ actionId })) if (action?.status === ActionStatus.EXECUTING) return;
}

describe("a server stopped with engine.stop_grace_seconds", () => {
  it("drains: new actions refused with UNAVAILABLE, reads and waits answered, the running fit finishes; then it exits", async () => {
    const s = await server([`path: ${join(tempDir(), "plinth.db")}`]);
    const modelId = (await s.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const fit = (await s.engine.fit({ modelId, kwargs: { sleep: json(2) } })).action!;
    await running(s, fit.id);
    const exited = once(s.process.child, "exit");
    s.process.child.kill("SIGTERM");
    await logged(s.process, /"msg":"draining/);

    const refused = await s.engine.predict({ modelId }).then(
      () => undefined,
      (error: unknown) => error as ClientError,
    );
    expect(refused).toBeInstanceOf(ClientError);
    expect(refused!.code).toBe(Status.UNAVAILABLE);
    expect(refused!.details).toMatch(/^the server is draining: .*\(within engine\.stop_grace_seconds, 60 s\).*send new calls to another server$/);
    expect((await s.actions.getAction({ actionId: fit.id })).action!.status).toBe(ActionStatus.EXECUTING);

    const ended = (await s.actions.waitAction({ actionId: fit.id })).action!;
    expect(ended.status).toBe(ActionStatus.SUCCEEDED);
    const [code] = await exited;
    expect(code).toBe(0);
  });

  it("in a cluster on PostgreSQL, a rolling restart under load ends no action cancelled or failed", async () => {
    const url = await newDatabase();
    const backend = ["kind: postgres", `url: ${url}`, "lease_seconds: 5"];
    const servers = [await server(backend), await server(backend)];
    const models = await Promise.all(
      Array.from({ length: 4 }, async () => (await servers[0]!.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId),
    );

    // Four clients, each with one predict at a time: sent to the next server up, and to the
    // one after when a server refuses (draining) or is gone; each one a server acknowledged
    // is kept, and waited for on whichever server answers.
    const acknowledged: string[] = [];
    let load = true;
    let turn = 0;
    const unavailable = (error: unknown) => error instanceof ClientError && error.code === Status.UNAVAILABLE;
    const onAny = async <T>(call: (s: (typeof servers)[number]) => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          return await call(servers[turn++ % servers.length]!);
        } catch (error) {
          if (!unavailable(error)) throw error;
        }
      }
    };
    const client = async (modelId: string) => {
      while (load) {
        const id = await onAny(async (s) => (await s.engine.predict({ modelId, kwargs: { sleep: json(0.2) } })).action!.id);
        acknowledged.push(id);
        // A server that stops while the action runs elsewhere ends the wait: UNAVAILABLE, wait on another.
        await onAny((s) => s.actions.waitAction({ actionId: id }));
      }
    };
    const clientsDone = Promise.all(models.map(client));

    /** Stops servers[i] (SIGTERM: it drains), waits for its exit, and starts another in its place. */
    const restart = async (i: number) => {
      const before = acknowledged.length;
      while (acknowledged.length < before + 8) await new Promise((resolve) => setImmediate(resolve));
      const old = servers[i]!;
      const exited = once(old.process.child, "exit");
      old.process.child.kill("SIGTERM");
      const [code] = await exited;
      expect(code).toBe(0);
      servers[i] = await server(backend);
    };
    await restart(0);
    await restart(1);
    load = false;
    await clientsDone;

    const ends = await Promise.all(acknowledged.map(async (actionId) => (await servers[0]!.actions.waitAction({ actionId })).action!));
    const notSucceeded = ends
      .filter((a: Action) => a.status !== ActionStatus.SUCCEEDED)
      .map((a) => `${a.id} ${ActionStatus[a.status]} ${a.error?.message}`);
    expect(notSucceeded).toEqual([]);
    expect(ends.length).toBeGreaterThanOrEqual(16);
  });
});
