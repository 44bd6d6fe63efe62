/**
 * One database, a serving server and a standby (backend.standby): the standby takes over
 * when the server stops cleanly (at once), and when it stops responding (once its lease
 * lapses); a server that wakes up after losing its lease writes nothing and stops.
 */
import { once } from "node:events";
import { join } from "node:path";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { json } from "./helpers/args.ts";
import { newDatabase } from "./helpers/postgres.ts";
import { isAlive } from "./helpers/processes.ts";
import { clients, descendantsOf, type ServerProcess, startProcess, writeConfig } from "./helpers/server-process.ts";
import { root } from "./helpers/server.ts";

const LEASE_SECONDS = 2;
const started: ServerProcess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGCONT");
      p.child.kill("SIGKILL");
    }
  }
});

function serverProcess(url: string, extra: string[] = []) {
  const config = writeConfig(
    [
      "backend:",
      "  kind: postgres",
      `  url: ${url}`,
      `  lease_seconds: ${LEASE_SECONDS}`,
      "engine:",
      "  sigterm_timeout: 1",
      "plugins:",
      `  - module: ${join(root, "plugins/system-test/mod.ts")}`,
    ].join("\n"),
  );
  const p = startProcess(["--config", config, "--address", "127.0.0.1:0", ...extra]);
  started.push(p);
  return p;
}

/** Resolves once the process has printed a line matching `pattern`. */
function printed(p: ServerProcess, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => pattern.test(p.output()) && resolve();
    check();
    p.child.stdout!.on("data", check);
    p.child.once("exit", () => reject(new Error(`exited before printing ${pattern}:\n${p.output()}`)));
  });
}

describe("a standby server on one PostgreSQL database", () => {
  it("takes over at once when the serving server stops cleanly", async () => {
    const url = await newDatabase();
    const first = serverProcess(url);
    const c = clients(await first.port);
    const modelId = (await c.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    c.channel.close();
    const standby = serverProcess(url, ["--standby"]);
    await printed(standby, /standing by: .* is served by Plinth server pid \d+/);
    first.child.kill("SIGTERM");
    await once(first.child, "exit");
    const stoppedAt = performance.now();
    const d = clients(await standby.port);
    // Handed over, not waited out: well within the lease.
    expect(performance.now() - stoppedAt).toBeLessThan(LEASE_SECONDS * 1000);
    expect((await d.engine.getModel({ modelId })).model!.revision).toBe(1n);
    d.channel.close();
  });

  it("takes over once a stalled server's lease lapses and runs what it left queued; woken, that server writes nothing more and stops with its children", async () => {
    const url = await newDatabase();
    const first = serverProcess(url);
    const c = clients(await first.port);
    const modelId = (await c.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.modelId;
    const { action } = await c.engine.fit({ modelId, kwargs: { sleep: json(60) } });
    for await (const update of c.actions.watchAction({ actionId: action!.id })) if (update.action!.status === ActionStatus.EXECUTING) break;
    // Queued behind it, on the same model: it has not started when the server stalls.
    const queued = (await c.engine.fit({ modelId, args: [json("after")] })).action!;
    expect(queued.status).toBe(ActionStatus.QUEUED);
    c.channel.close();
    const children = descendantsOf(first.child.pid!);
    expect(children.length).toBeGreaterThan(0);
    const standby = serverProcess(url, ["--standby"]);
    await printed(standby, /standing by/);

    first.child.kill("SIGSTOP"); // stalled: alive, but renewing nothing
    const stalledAt = performance.now();
    const d = clients(await standby.port);
    const tookOver = performance.now() - stalledAt;
    expect(tookOver).toBeGreaterThan(LEASE_SECONDS * 1000 * 0.5);
    expect(tookOver).toBeLessThan(LEASE_SECONDS * 1000 + 10_000);
    const failed = (await d.actions.getAction({ actionId: action!.id })).action!;
    expect(failed.status).toBe(ActionStatus.FAILED);
    expect(failed.error?.code).toBe("interrupted");
    expect(failed.error?.message).toMatch(new RegExp(`^Plinth server pid ${first.child.pid} on .* stopped responding \\(its lease lapsed\\)$`));

    // Woken, the old server finds its lease taken: it kills its children, writes nothing, exits 1.
    const exited = once(first.child, "exit");
    first.child.kill("SIGCONT");
    const [code] = await exited;
    expect(code).toBe(1);
    expect(first.output()).toMatch(/this server lost its lease on .*: another server took over/);
    for (const pid of children) expect(isAlive(pid)).toBe(false);
    const after = (await d.actions.getAction({ actionId: action!.id })).action!;
    expect(after.error?.message).toBe(failed.error?.message);
    // The queued fit ran on the server that took over, in its turn, with its arguments.
    const ran = (await d.actions.waitAction({ actionId: queued.id })).action!;
    expect(ran.status).toBe(ActionStatus.SUCCEEDED);
    const model = (await d.engine.getModel({ modelId, includeInstance: true })).model!;
    expect(model.revision).toBe(2n);
    expect(JSON.parse(new TextDecoder().decode(model.instance)).fits).toEqual([{ args: ["after"], kwargs: {} }]);
    d.channel.close();
  });

  it("a write by a server whose lease another took is refused, and nothing of it lands", async () => {
    const url = await newDatabase();
    const first = serverProcess(url);
    const c = clients(await first.port);
    // As a takeover leaves it: the lease names another server.
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      await db.query("UPDATE plinth_lease SET server = 'someone-else', host = 'elsewhere', expires = now() + interval '1 hour'");
      const refused = await c.engine.createInstance({ modelType: "systest.Model" }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(refused?.message).toMatch(/lease on .* has lapsed/);
      const [code] = await once(first.child, "exit");
      expect(code).toBe(1);
      expect((await db.query("SELECT count(*)::int AS n FROM actions")).rows[0].n).toBe(0);
    } finally {
      c.channel.close();
      await db.end();
    }
  });
});
