/** The `plinth` command line, run as a user runs it (`npx plinth …`) against a real server. */
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { parse as parseYaml } from "yaml";
import { isAlive } from "./helpers/processes.ts";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const exec = promisify(execFile);

let t: TestServer;
const cli = inject("cliBundle");
beforeAll(async () => {
  t = await startTestServer({
    engine: { sigterm_timeout: 1 },
    plugins: [{ module: join(root, "plugins/system-test/mod.ts") }, { module: fixture("misbehave.ts") }],
  });
});
afterAll(() => t?.close());

/**
 * `plinth --address … args` — the command line built from the sources for the run
 * (test/global-server-bundle.ts; without npx's own second of start-up, nor tsx's, each time; the
 * tests on a terminal and `serve` go through npx and the bin, cli/plinth.mjs): its exit
 * code, stdout and stderr.
 */
async function plinth(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return exec(process.execPath, [cli, "--address", `127.0.0.1:${t.port}`, ...args], { cwd: root, env: { ...process.env, NO_COLOR: "1" } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe("plinth, the command line", () => {
  it("creates, fits with -a, -k and @data.access, and predicts, printing the prediction", async () => {
    const created = await plinth("create", "systest.Model", "-a", "first", "-k", 'opts={"depth":3}', "-o", "json");
    expect(created.code).toBe(0);
    const action = JSON.parse(created.stdout);
    expect(action.status).toBe("ACTION_STATUS_SUCCEEDED");
    const modelId = action.modelId as string;

    const fitted = await plinth("fit", modelId, "-a", "@systest.echo", "-a", "[1,2]", "-k", "sleep=0.2");
    expect(fitted.code).toBe(0);
    expect(fitted.stdout).toMatch(/^status +succeeded$/m);
    expect(fitted.stdout).toMatch(/^data +args\[0\] ← systest\.echo: succeeded$/m);
    expect(fitted.stdout).toContain(`model    ${modelId} revision 2`);
    // Not on a TTY: one plain line per change on stderr, no bars and no escape codes.
    expect(fitted.stderr).toMatch(/^a-\S+ executing/m);
    expect(fitted.stderr).not.toContain("\u001b[");

    const file = join(tempDir(), "blob.bin");
    writeFileSync(file, Buffer.from([1, 2, 3, 4]));
    const predicted = await plinth("predict", modelId, "-a", "42", "-k", `blob=@${file}`, "-k", "word=hello");
    expect(predicted.code).toBe(0);
    const prediction = JSON.parse(predicted.stdout);
    expect(prediction.args).toEqual([42]);
    expect(prediction.kwargs).toEqual({ blob: { bytes: 4 }, word: "hello" });
    expect(prediction.instance.args).toEqual({ args: ["first"], kwargs: { opts: { depth: 3 } } });
  });

  it("gives a data-access function its own arguments as a call, @NAME(VALUE, KEY=VALUE), in -a and -k, nested too", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    const predicted = await plinth(
      "predict",
      modelId,
      "-a",
      "@systest.add(1, 2, 3.5)",
      "-a",
      "@systest.add(@systest.add(1, 2), 4)",
      "-k",
      'e=@systest.echo("x, y", [1, [2]], sleep=0, tag=word, n={"a": [1, 2]})',
    );
    expect(predicted.code).toBe(0);
    // Each data-access call with its own progress, the nested one under its argument.
    expect(predicted.stderr).toMatch(/data: args\[0\] succeeded, args\[1\]\.args\[0\] succeeded, args\[1\] succeeded, kwargs\.e succeeded/);
    const prediction = JSON.parse(predicted.stdout);
    expect(prediction.args).toEqual([6.5, 7]);
    expect(prediction.kwargs.e).toEqual({ args: ["x, y", [1, [2]]], kwargs: { sleep: 0, tag: "word", n: { a: [1, 2] } } });

    // Refused before anything is sent, naming where.
    const unparsed = await plinth("predict", modelId, "-a", "[[5.1, 3.5, 1.4");
    expect(unparsed.code).toBe(2);
    expect(unparsed.stderr).toMatch(/^plinth: -a #1: "\[\[5\.1, 3\.5, 1\.4" looks like JSON but does not parse/);
    const inCall = await plinth("predict", modelId, "-k", "e=@systest.echo(1, n={oops)");
    expect(inCall.code).toBe(2);
    expect(inCall.stderr).toMatch(/^plinth: -k e: @systest\.echo\(1, n=\{oops\): a \} is not closed in its arguments/);
    const badJson = await plinth("predict", modelId, "-k", "e=@systest.echo(n={oops})");
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toMatch(/^plinth: -k e @systest\.echo n: "\{oops\}" looks like JSON but does not parse/);
    expect((await t.actions.listActions({ modelId })).actions).toHaveLength(2);
  });

  it("finds actions in the history by model type, call, status, error code and time", async () => {
    const since = new Date().toISOString();
    const { modelId } = JSON.parse((await plinth("create", "misbehave.Model", "-o", "json")).stdout);
    const failed = JSON.parse((await plinth("predict", modelId, "-k", "mode=throw", "-o", "json")).stdout);
    const fine = JSON.parse((await plinth("predict", modelId, "-o", "json")).stdout);
    const list = async (...filters: string[]) => {
      const listed = await plinth("actions", ...filters, "-o", "json");
      expect(listed.stderr).toBe("");
      return (JSON.parse(listed.stdout) as { id: string }[]).map((a) => a.id);
    };
    expect(await list("--type", "misbehave.Model", "--call", "predict", "--since", since)).toEqual([fine.id, failed.id]);
    expect(await list("--type", "misbehave.Model", "--error", "plugin_error", "--since", "1h")).toEqual([failed.id]);
    expect(await list("--type", "misbehave.Model", "--status", "failed", "--call", "create", "fit", "--since", since)).toEqual([]);
    expect(await list("--type", "systest.Model", "--since", since)).toEqual([]);
    expect(await list("--call", "create", "--until", since, "--type", "misbehave.Model")).not.toContain(failed.id);
    const bad = await plinth("actions", "--since", "yesterday");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--since: an ISO time (2026-12-07T10:00) or a while ago (90s, 30m, 2h, 7d), got yesterday");
    expect((await plinth("actions", "--call", "train")).stderr).toContain("--call train: one of create, fit, predict");
  });

  it("exits 1 when the action fails, 10 + the status when a call is refused, 2 on bad usage", async () => {
    const { modelId } = JSON.parse((await plinth("create", "misbehave.Model", "-o", "json")).stdout);
    const failed = await plinth("predict", modelId, "-k", "mode=throw");
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^error +plugin_error: /m);

    const missing = await plinth("predict", "m-missing");
    expect(missing.code).toBe(15);
    expect(missing.stderr).toBe("plinth: NOT_FOUND: model m-missing not found\n");

    const badPair = await plinth("fit", modelId, "-k", "nosign");
    expect(badPair.code).toBe(2);
    expect(badPair.stderr).toContain("-k nosign: write NAME=VALUE");
    const badRef = await plinth("fit", modelId, "-a", "@no.such");
    expect(badRef.code).toBe(2);
    expect(badRef.stderr).toMatch(/-a #1: @no\.such is neither a data-access function \(known: .*systest\.echo.*\) nor a readable file/);
  });

  it("--detach prints the id at once; wait follows it; cancel ends it, and wait then exits 3", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    const detached = await plinth("fit", modelId, "-k", "sleep=30", "--detach");
    expect(detached.code).toBe(0);
    const id = detached.stdout.trim();
    expect(id).toMatch(/^a-\S+$/);
    const waiting = plinth("wait", id);
    const cancelled = await plinth("cancel", id, "-o", "yaml");
    expect(cancelled.code).toBe(0);
    const doc = parseYaml(cancelled.stdout);
    expect(doc.status).toBe("ACTION_STATUS_CANCELLED");
    expect(doc.cancel.by).toBe("CancelAction");
    const waited = await waiting;
    expect(waited.code).toBe(3);
    expect(waited.stdout).toMatch(/^status +cancelled$/m);
  });

  it("runs a call at a --priority, shows it in actions and action, and filters on it; refuses one out of range", async () => {
    const created = JSON.parse((await plinth("create", "systest.Model", "--priority", "1", "-o", "json")).stdout);
    expect(created.priority).toBe(1);
    const table = await plinth("actions", "--model", created.modelId, "--priority", "1");
    expect(table.stdout.split("\n")[0]).toMatch(/^ID +CALL +MODEL +STATUS +PRI +TRY +CREATED +BY +ERROR$/);
    expect(table.stdout.split("\n")[1]).toMatch(new RegExp(`^${created.id} +create +${created.modelId} +succeeded +1 `));
    expect((await plinth("action", created.id)).stdout).toMatch(/^priority 1$/m);
    const refused = await plinth("fit", created.modelId, "--priority", "9");
    expect([refused.code, refused.stderr.trim()]).toEqual([2, expect.stringContaining("--priority: 1 (highest) to 5, got 9")]);
  });

  it("lists models and actions as tables, JSON and YAML", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    const table = await plinth("models", "--type", "systest.Model");
    expect(table.stdout.split("\n")[0]).toMatch(/^ID +TYPE +REVISION +SIZE +UPDATED$/);
    expect(table.stdout).toContain(modelId);
    const models = JSON.parse((await plinth("models", "-o", "json")).stdout) as { id: string }[];
    expect(models.map((m) => m.id)).toContain(modelId);
    const model = parseYaml((await plinth("model", modelId, "-o", "yaml")).stdout);
    expect(model).toMatchObject({ id: modelId, modelType: "systest.Model", revision: "1" });
    const actions = JSON.parse((await plinth("actions", "--model", modelId, "-o", "json")).stdout) as { call: string; status: string }[];
    expect(actions).toEqual([expect.objectContaining({ call: "ACTION_CALL_CREATE_INSTANCE", status: "ACTION_STATUS_SUCCEEDED" })]);
    const shown = await plinth("action", (actions[0] as unknown as { id: string }).id);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^call +create systest\.Model on m-\S+$/m);
    expect(shown.stdout).toMatch(/^status +succeeded$/m);
    const plugins = await plinth("plugins");
    expect(plugins.stdout).toMatch(/^systest\.echo +data access +systest +data_access\(sleep\?, remember\?\) /m);
    expect(plugins.stdout).toMatch(/^systest\.add +data access +systest +data_access\(args…\) /m);
    // JSON gives each declared call's schemas whole.
    const listed = JSON.parse((await plinth("plugins", "-o", "json")).stdout) as {
      name: string;
      modelTypes: { name: string; schemas?: { call: string; kwargs?: { properties: Record<string, unknown> } }[] }[];
    }[];
    const declared = listed.find((p) => p.name === "systest")!.modelTypes[0]!;
    expect(declared.schemas!.map((c) => c.call)).toEqual(["instantiate", "fit", "predict"]);
    expect(declared.schemas![1]!.kwargs!.properties.sleep).toMatchObject({ type: "number", minimum: 0 });
  });

  it("shows a progress bar on a terminal that advances and ends at 100 %, and none when piped", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    // A real pseudo-terminal: util-linux's script runs the command as a terminal would.
    const command = `npx plinth --address 127.0.0.1:${t.port} fit ${modelId} -k sleep=1.5`;
    const { stdout } = await exec("script", ["-qec", command, "/dev/null"], { cwd: root });
    const percents = [...stdout.matchAll(/(\d+)% \| a-\S+ (?:executing|storing|succeeded)/g)].map((m) => Number(m[1]));
    expect(new Set(percents).size).toBeGreaterThan(2);
    expect(percents.at(-1)).toBe(100);
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(stdout).toMatch(/status +succeeded/);
  });

  it("watch --once prints the running and recent actions with their progress", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    const id = (await plinth("fit", modelId, "-k", "sleep=30", "--detach")).stdout.trim();
    for await (const update of t.actions.watchAction({ actionId: id })) if (update.action!.state) break;
    const shown = await plinth("watch", "--once");
    expect(shown.code).toBe(0);
    const lines = shown.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^ID +CALL +MODEL +STATUS +PROGRESS +TIME +ERROR$/);
    expect(lines.find((l) => l.startsWith(id))).toMatch(/ fit +m-\S+ +executing +[█░]+ \d+% +\d+\.\d s/);
    await t.actions.cancelAction({ actionId: id });
  });

  it("adds, updates and deletes a model from a file; prints a plugin's log lines", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-a", "x", "-o", "json")).stdout);
    const file = join(tempDir(), "instance.json");
    expect((await plinth("model", modelId, "--instance", file)).code).toBe(0);
    const added = JSON.parse((await plinth("add", "systest.Model", file, "-o", "json")).stdout);
    expect(added).toMatchObject({ modelType: "systest.Model", revision: "1" });
    expect(JSON.parse((await plinth("update", added.id, file, "-o", "json")).stdout)).toMatchObject({ id: added.id, revision: "2" });
    expect((await plinth("delete", added.id)).stdout).toBe(`deleted ${added.id}\n`);
    expect((await plinth("model", added.id)).code).toBe(15);

    const { modelId: loud } = JSON.parse((await plinth("create", "misbehave.Model", "-o", "json")).stdout);
    const predicted = JSON.parse((await plinth("predict", loud, "-k", "mode=print", "-o", "json")).stdout);
    const logs = await plinth("logs", predicted.id);
    expect(logs.code).toBe(0);
    expect(logs.stdout.length).toBeGreaterThan(0);
    expect(logs.stdout.trim().split("\n")).toEqual(predicted.logTail);

    // A data-access argument's lines come first, each named by its argument and function.
    const fed = JSON.parse((await plinth("predict", loud, "-a", '@misbehave.log("hello from the data")', "-k", "mode=print", "-o", "json")).stdout);
    const both = (await plinth("logs", fed.id)).stdout.trim().split("\n");
    expect(both.slice(0, 2)).toEqual([
      "args[0] ← misbehave.log: hello from the data",
      expect.stringMatching(/^args\[0\] ← misbehave\.log: .*logged/),
    ]);
    expect(both.slice(2)).toEqual(fed.logTail);
  });

  it("answers an unknown flag and malformed --args-json with one line and exit 2", async () => {
    const unknown = await plinth("models", "--colour");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("error: unknown option '--colour'");
    const malformed = await plinth("predict", "m-x", "--args-json", "{nope");
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/^plinth: --args-json is not valid JSON: .*\n$/);
  });

  it("Ctrl-C on a terminal asks whether to cancel: y cancels the action", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    const term = onTerminal(`npx plinth --address 127.0.0.1:${t.port} fit ${modelId} -k sleep=30`);
    await term.seen(/\d+% \| a-\S+ executing/);
    term.type("\u0003");
    await term.seen(/Cancel action a-\S+\? \[y\/N\]/);
    term.type("y\n");
    await once(term.child, "exit");
    // (npx runs the command below a shell that got the Ctrl-C too: its exit status is
    // the shell's 130, not the command's 3; `plinth wait` on a cancelled action exits 3.)
    expect(term.out()).toMatch(/status +cancelled/);
    const id = /Cancel action (a-\S+)\?/.exec(term.out())![1]!;
    expect((await t.actions.getAction({ actionId: id })).action!.cancel?.by).toBe("CancelAction");
  });

  it("Ctrl-C before the server has answered asks too, and y cancels the action once the server answers", async () => {
    const { modelId } = JSON.parse((await plinth("create", "systest.Model", "-o", "json")).stdout);
    // Between the command and the server, a proxy that holds what the command sends until
    // let go: its fit is on its way, and the server has not seen it.
    const proxy = holdingProxy(t.port);
    onTestFinished(() => proxy.close());
    const term = onTerminal(`${process.execPath} ${cli} --address 127.0.0.1:${await proxy.port} fit ${modelId} -k sleep=30`);
    await proxy.requestHeld;
    term.type("\u0003");
    await term.seen(/Cancel the fit just sent \(the server has not answered yet\)\? \[y\/N\]/);
    term.type("y\n");
    proxy.release();
    const [code] = await once(term.child, "exit");
    expect(code).toBe(3);
    expect(term.out()).toMatch(/status +cancelled/);
    const id = /cancelling (a-\S+)…/.exec(term.out())![1]!;
    expect((await t.actions.getAction({ actionId: id })).action!.cancel?.by).toBe("CancelAction");
  });

  it("serve runs the server with the server's options, until SIGTERM to npx's pid, and leaves no server behind", async () => {
    const bad = spawn("npx", ["plinth", "serve", "--config", join(tempDir(), "none.yaml")], { cwd: root });
    let out = "";
    bad.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    const [code] = await once(bad, "exit");
    expect(code).toBe(1);
    expect(out).toContain("none.yaml cannot be read");

    const config = join(tempDir(), "plinth.yaml");
    writeFileSync(config, `backend:\n  kind: memory\nplugins:\n  - module: ${join(root, "plugins/system-test/mod.ts")}\n`);
    const good = spawn("npx", ["plinth", "serve", "--config", config, "--address", "127.0.0.1:0"], { cwd: root });
    // Whatever fails below, the server stops: a server left on a port would fail other tests.
    onTestFinished(() => {
      const pid = /"pid":(\d+)/.exec(log)?.[1];
      if (pid && isAlive(Number(pid))) process.kill(Number(pid), "SIGKILL");
    });
    let log = "";
    await new Promise<void>((resolve, reject) => {
      good.stdout!.on("data", (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes('"msg":"serving"')) resolve();
      });
      good.once("exit", (code, signal) => reject(new Error(`plinth serve exited with ${code ?? signal} before serving:\n${log}`)));
    });
    const server = Number(/"pid":(\d+)/.exec(log)![1]);
    // On the port it was given (0: one the system chose), not the default 50051.
    expect(log).toMatch(/"address":"127\.0\.0\.1:(?!50051")\d+"/);
    // On the whole log so far (the listener above appends first): a line may come in two chunks.
    const gone = new Promise<void>((resolve) => good.stdout!.on("data", () => log.includes('"msg":"stopped"') && resolve()));
    good.kill("SIGTERM");
    await gone;
    // The server's own exit, a moment after its last line: it is no child of ours to wait for.
    await expect.poll(() => isAlive(server), { timeout: 30_000 }).toBe(false);
  });
});

/** A command run on a real pseudo-terminal: what is typed into it reaches it as a user's keys (Ctrl-C as SIGINT). */
function onTerminal(command: string) {
  // `exec`: the command in the shell's place, whichever shell script runs (dash, CI's
  // /bin/sh, keeps itself above the command and exits 130 on the Ctrl-C it got too).
  const child = spawn("script", ["-qec", `exec ${command}`, "/dev/null"], { cwd: root, stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  const waiting: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of waiting.splice(0))
      if (w.pattern.test(out)) w.resolve();
      else waiting.push(w);
  });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return {
    child,
    out: () => out,
    type: (keys: string) => child.stdin!.write(keys),
    seen: (pattern: RegExp) => new Promise<void>((resolve) => (pattern.test(out) ? resolve() : waiting.push({ pattern, resolve }))),
  };
}

/**
 * A TCP proxy to the server that holds all the client sends, and lets it through once
 * released. `requestHeld` resolves once an HTTP/2 DATA frame is among what it holds: a
 * request's body has been sent.
 */
function holdingProxy(target: number) {
  const sockets: Socket[] = [];
  let released = false;
  const holding: (() => void)[] = [];
  let onHeld!: () => void;
  const requestHeld = new Promise<void>((resolve) => {
    onHeld = resolve;
  });
  const server = createServer((client) => {
    const upstream = connect(target, "127.0.0.1");
    sockets.push(client, upstream);
    upstream.pipe(client);
    let held = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      if (released) return void upstream.write(chunk);
      held = Buffer.concat([held, chunk]);
      if (hasData(held)) onHeld();
    });
    holding.push(() => upstream.write(held));
  });
  server.listen(0, "127.0.0.1");
  return {
    port: once(server, "listening").then(() => (server.address() as AddressInfo).port),
    requestHeld,
    release() {
      released = true;
      for (const flush of holding) flush();
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Whether the bytes a client sent over HTTP/2 (the preface, then frames) hold a DATA frame with something in it. */
function hasData(bytes: Buffer): boolean {
  for (let i = 24; i + 9 <= bytes.length; i += 9 + bytes.readUIntBE(i, 3)) if (bytes[i + 3] === 0 && bytes.readUIntBE(i, 3) > 0) return true;
  return false;
}
