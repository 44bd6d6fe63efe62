/**
 * `plinth`: Plinth's command line. It talks to a server over gRPC through the
 * TypeScript client (client/mod.ts); `plinth serve` runs the server itself.
 *
 * Exit codes: 0 done; 1 the action failed; 2 bad usage; 3 the action was cancelled;
 * 10 + the gRPC status code when a call was refused (NOT_FOUND → 15, UNAVAILABLE → 24,
 * UNAUTHENTICATED → 26, …); 130 interrupted, the action left running.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Command, CommanderError, Option } from "commander";
import { ClientError, Status } from "nice-grpc";
import { isEnded, progressOf } from "../client/action-run.ts";
import { type ActionRun, createPlinthClient, PlinthActionError, type PlinthClient, type RetryInput } from "../client/mod.ts";
import { fromArg } from "../client/values.ts";
import type { Action } from "../gen/plinth/v1/action_pb.ts";
import { ActionCall, ActionStatus, ActionView } from "../gen/plinth/v1/action_pb.ts";
import type { PluginFunction } from "../gen/plinth/v1/engine_service_pb.ts";
import type { Model } from "../gen/plinth/v1/model_pb.ts";
import { PLINTH_DIR } from "../server/package-root.ts";
import { parseArgsJson, parseArgValues, UsageError } from "./arguments.ts";
import { initMessage, initProject } from "./init.ts";
import { CtrlC, INTERRUPTED } from "./interrupt.ts";
import { actionJson, actionsTable, actionText, type Format, modelJson, modelsTable, print, table } from "./output.ts";
import { follower } from "./progress.ts";
import { watch } from "./watch.ts";

const EXIT = { failed: 1, usage: 2, cancelled: 3, interrupted: INTERRUPTED } as const;
/** The statuses of an action a server has taken and runs. */
const RUNNING = [ActionStatus.ACCESSING_DATA, ActionStatus.EXECUTING, ActionStatus.STORING];

interface Global {
  address: string;
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  output: Format;
}

const program = new Command()
  .name("plinth")
  .description("Plinth's command line: models, actions with live progress, plugins")
  .addOption(new Option("--address <host:port>", "the server").env("PLINTH_ADDRESS").default("127.0.0.1:50051"))
  .addOption(new Option("--token <token>", "bearer token (server.auth)").env("PLINTH_TOKEN"))
  .addOption(new Option("--tls-ca <file>", "TLS: the CA that signed the server's certificate"))
  .addOption(new Option("--tls-cert <file>", "mutual TLS: this client's certificate"))
  .addOption(new Option("--tls-key <file>", "mutual TLS: this client's key"))
  .addOption(new Option("-o, --output <format>", "table, json or yaml").choices(["table", "json", "yaml"]).default("table"))
  .version(JSON.parse(readFileSync(join(PLINTH_DIR, "package.json"), "utf8")).version)
  .showHelpAfterError()
  .exitOverride();

let connected: PlinthClient | undefined;
function client(): PlinthClient {
  if (connected) return connected;
  const g = program.opts<Global>();
  const read = (file: string | undefined) => (file ? readFileSync(file) : undefined);
  const tls = g.tlsCa || g.tlsCert ? { ca: read(g.tlsCa), cert: read(g.tlsCert), key: read(g.tlsKey) } : undefined;
  connected = createPlinthClient(g.address, {
    ...(g.token ? { token: g.token } : {}),
    ...(tls ? { tls: Object.fromEntries(Object.entries(tls).filter(([, v]) => v)) } : {}),
  });
  return connected;
}
const format = () => program.opts<Global>().output;

// ---- the server ----

program
  .command("serve")
  .description("run the server (what npm start runs)")
  .allowUnknownOption()
  .helpOption(false)
  .argument("[options...]", "the server's options: --config FILE, --address HOST:PORT, --http-address HOST:PORT, --watch, --log-level LEVEL")
  .action(async () => {
    // Every word after `serve` is the server's: commander would take --address as this
    // command line's own (the server to talk to), and the server would not see it.
    const words = process.argv.slice(2);
    const options = words.slice(words.indexOf("serve") + 1);
    const { serve } = await import("../server/serve.ts");
    stopWhenOrphaned();
    process.exitCode = await serve(options);
  });

program
  .command("init")
  .description("make a plugin project to start from: a typed plugin, its tests, a plinth.yaml that serves it")
  .argument("[dir]", "the project's folder, made if missing", ".")
  .action((dir: string) => {
    const made = initProject(dir);
    console.log(initMessage(made, process.cwd()));
  });

/**
 * Under npx the server runs below a shell (npm exec → sh -c → node), and a SIGTERM to
 * npx's pid kills the shell without reaching the server. A server whose launcher is gone
 * stops as if it had got the SIGTERM itself. Only under npx: a server started with nohup
 * from a shell that exits keeps running, as it should.
 */
function stopWhenOrphaned(): void {
  if (process.env.npm_command !== "exec") return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.kill(process.pid, "SIGTERM");
  }, 500);
  timer.unref();
}

// ---- plugins and models ----

program
  .command("plugins")
  .description("the plugins the server loaded: model types and data-access functions")
  .action(async () => {
    const { plugins } = await client().engine.listPlugins({});
    const fn = (f: PluginFunction) => ({
      name: f.name,
      description: f.description,
      ...(f.schemas.length ? { schemas: f.schemas.map((c) => ({ call: c.call, args: c.args, kwargs: c.kwargs, state: c.state })) } : {}),
    });
    const value = plugins.map((p) => ({
      name: p.name,
      module: p.module,
      runtime: p.runtime,
      description: p.description,
      modelTypes: p.modelTypes.map(fn),
      dataAccess: p.dataAccess.map(fn),
      ...(p.watched ? { watched: true } : {}),
      ...(p.reloadError ? { reloadError: p.reloadError } : {}),
    }));
    print(format(), value, () =>
      table(
        ["NAME", "KIND", "PLUGIN", "ARGUMENTS", "DESCRIPTION"],
        plugins.flatMap((p) => [
          ...p.modelTypes.map((m) => [m.name, "model type", p.name, signatures(m), m.description]),
          ...p.dataAccess.map((d) => [d.name, "data access", p.name, signatures(d), d.description]),
        ]),
      ),
    );
    for (const p of plugins)
      if (p.reloadError) console.error(`${p.name}: its changed code does not load, the previous version serves: ${p.reloadError}`);
  });

program
  .command("servers")
  .description("the servers of a cluster (several on one PostgreSQL database) and what each runs")
  .action(async () => {
    const { servers } = await client().engine.listPlugins({});
    // What each runs now: the actions past their queue, by the server that took them.
    const running = servers.length ? (await client().actions.listActions({ statuses: RUNNING, pageSize: 1000, view: ActionView.BASIC })).actions : [];
    const value = servers.map((s) => ({
      name: s.name,
      address: s.address,
      host: s.host,
      pid: s.pid,
      since: s.since ? timestampDate(s.since).toISOString() : "",
      plugins: s.plugins,
      modelTypes: s.modelTypes,
      dataAccess: s.dataAccess,
      running: running.filter((a) => a.server === s.name).map((a) => a.id),
      ...(s.thisServer ? { thisServer: true } : {}),
    }));
    if (servers.length === 0 && format() === "table") {
      console.log("this server runs on its own (backend.kind sqlite or memory): no cluster");
      return;
    }
    print(format(), value, () =>
      table(
        ["NAME", "ADDRESS", "HOST", "PID", "SINCE", "RUNNING", "MODEL TYPES"],
        value.map((s) => [
          `${s.name}${s.thisServer ? " *" : ""}`,
          s.address,
          s.host,
          String(s.pid),
          s.since,
          String(s.running.length),
          s.modelTypes.join(", "),
        ]),
      ),
    );
  });

/** A function's declared arguments in one line: `fit(2 args; iterations, seed?)`, per call that declared any. */
function signatures(f: PluginFunction): string {
  return f.schemas
    .map((c) => {
      const parts: string[] = [];
      const args = c.args as { prefixItems?: unknown[]; items?: unknown } | undefined;
      if (args?.prefixItems) parts.push(`${args.prefixItems.length} arg${args.prefixItems.length === 1 ? "" : "s"}`);
      else if (args?.items) parts.push("args…");
      const kwargs = c.kwargs as { properties?: Record<string, unknown>; required?: string[] } | undefined;
      if (kwargs?.properties) {
        const required = new Set(kwargs.required ?? []);
        parts.push(
          Object.keys(kwargs.properties)
            .map((k) => (required.has(k) ? k : `${k}?`))
            .join(", "),
        );
      }
      return `${c.call}(${parts.join("; ")})`;
    })
    .join(" ");
}

program
  .command("models")
  .description("list models")
  .option("--type <model type>", "only this model type")
  .option("--limit <n>", "at most this many", (v) => positive(v, "--limit"), 100)
  .action(async (o: { type?: string; limit: number }) => {
    const models: Model[] = [];
    let pageToken = "";
    do {
      const page = await client().engine.listModels({ modelType: o.type ?? "", pageSize: Math.min(o.limit - models.length, 1000), pageToken });
      models.push(...page.models);
      pageToken = page.nextPageToken;
    } while (pageToken && models.length < o.limit);
    print(format(), models.map(modelJson), () => modelsTable(models));
  });

program
  .command("model")
  .description("one model's metadata; --instance FILE writes its serialized instance")
  .argument("<id>")
  .option("--revision <n>", "an older revision, while it is kept")
  .option("--instance <file>", "write the instance bytes to this file")
  .action(async (id: string, o: { revision?: string; instance?: string }) => {
    const { model } = await client().engine.getModel({ modelId: id, includeInstance: Boolean(o.instance), revision: BigInt(o.revision ?? 0) });
    if (o.instance) (await import("node:fs")).writeFileSync(o.instance, model!.instance);
    const { instance: _, ...meta } = modelJson(model!) as Record<string, unknown>;
    print(format(), meta, () => modelsTable([model!]));
  });

const REQUEST_ID_HELP = "make it idempotent: the same id again answers as the first call did, changes nothing twice";
const requestIdOf = (o: { requestId?: string }) => (o.requestId === undefined ? {} : { requestId: o.requestId });

program
  .command("add")
  .description("add a model from a serialized instance")
  .argument("<model type>")
  .argument("<file>")
  .option("--request-id <id>", REQUEST_ID_HELP)
  .action(async (type: string, file: string, o: { requestId?: string }) => {
    const { model } = await client().engine.addInstance({ modelType: type, instance: readFileSync(file), ...requestIdOf(o) });
    print(format(), modelJson(model!), () => modelsTable([model!]));
  });

program
  .command("update")
  .description("store a serialized instance as the model's next revision")
  .argument("<id>")
  .argument("<file>")
  .option("--request-id <id>", REQUEST_ID_HELP)
  .action(async (id: string, file: string, o: { requestId?: string }) => {
    const { model } = await client().engine.updateInstance({ modelId: id, instance: readFileSync(file), ...requestIdOf(o) });
    print(format(), modelJson(model!), () => modelsTable([model!]));
  });

program
  .command("delete")
  .description("delete a model and its revisions")
  .argument("<id>")
  .option("--request-id <id>", REQUEST_ID_HELP)
  .action(async (id: string, o: { requestId?: string }) => {
    await client().engine.deleteModel({ modelId: id, ...requestIdOf(o) });
    print(format(), { deleted: id }, () => `deleted ${id}`);
  });

// ---- create, fit, predict ----

interface RunOptions {
  arg: string[];
  kwarg: string[];
  argsJson?: string;
  timeout?: number;
  requestId?: string;
  priority?: number;
  retry?: number;
  retryInterval?: number;
  retryMaxInterval?: number;
  nonRetryable: string[];
  detach?: boolean;
}

const collect = (value: string, previous: string[]) => [...previous, value];

function runCommand(name: "create" | "fit" | "predict", target: string, description: string) {
  return program
    .command(name)
    .description(description)
    .argument(`<${target}>`)
    .option("-a, --arg <value>", "a positional argument: JSON, a string, @data.access or @file (repeat)", collect, [])
    .option("-k, --kwarg <name=value>", "a keyword argument, the same forms (repeat)", collect, [])
    .option("--args-json <json>", 'args and kwargs as proto3 JSON: {"args": [{"json": 1}], "kwargs": {…}}')
    .option("--timeout <seconds>", "stop it past this many seconds (deadline_exceeded)", (v) => positive(v, "--timeout"))
    .option("--request-id <id>", REQUEST_ID_HELP)
    .option("--priority <n>", "1 (highest) to 5; default 3: among the calls waiting for a child, a higher priority goes first", priorityOption)
    .option("--retry <attempts>", "run a failed call again, up to this many attempts in all (the plugin's retry policy, else 1)", (v) =>
      attemptsOption(v),
    )
    .option("--retry-interval <seconds>", "wait before the second attempt (default 1), doubled before each next one", (v) =>
      positive(v, "--retry-interval"),
    )
    .option("--retry-max-interval <seconds>", "the longest wait between attempts (default 100 × --retry-interval)", (v) =>
      positive(v, "--retry-max-interval"),
    )
    .option("--non-retryable <code>", "an error code that ends the action at once, e.g. a PluginError's (repeat)", collect, [])
    .option("--detach", "print the action's id at once instead of following it")
    .action(async (id: string, o: RunOptions) => {
      // Ctrl-C asks from the first moment, before the server has answered too.
      const ctrlC = new CtrlC(name);
      const c = client();
      const input = await callInput(c, o);
      const run = name === "create" ? c.create(id, input) : name === "fit" ? c.fit(id, input) : c.predict(id, input);
      ctrlC.sent(run);
      await follow(run, o.detach === true, ctrlC);
    });
}

/** The request's retry policy from --retry and its companions; none without --retry. */
function retryOf(o: RunOptions): { retry?: RetryInput } {
  const companions = o.retryInterval !== undefined || o.retryMaxInterval !== undefined || o.nonRetryable.length > 0;
  if (o.retry === undefined) {
    if (companions) throw new UsageError("--retry-interval, --retry-max-interval and --non-retryable go with --retry <attempts>");
    return {};
  }
  return {
    retry: {
      maxAttempts: o.retry,
      ...(o.retryInterval === undefined ? {} : { initialIntervalSeconds: o.retryInterval }),
      ...(o.retryMaxInterval === undefined ? {} : { maximumIntervalSeconds: o.retryMaxInterval }),
      nonRetryableErrorCodes: o.nonRetryable,
    },
  };
}

async function callInput(c: PlinthClient, o: RunOptions) {
  const timeout = {
    ...(o.timeout === undefined ? {} : { timeoutSeconds: o.timeout }),
    ...requestIdOf(o),
    ...(o.priority === undefined ? {} : { priority: o.priority }),
    ...retryOf(o),
  };
  if (o.argsJson) {
    if (o.arg.length || o.kwarg.length) throw new UsageError("--args-json replaces -a and -k: use one or the other");
    return { ...parseArgsJson(o.argsJson), ...timeout };
  }
  const references = [...o.arg, ...o.kwarg].some((v) => v.includes("@"));
  const names = new Set<string>();
  if (references) for (const p of (await c.engine.listPlugins({})).plugins) for (const d of p.dataAccess) names.add(d.name);
  return { ...parseArgValues(o.arg, o.kwarg, names), ...timeout };
}

runCommand("create", "model type", "create a model instance (CreateInstance)");
runCommand("fit", "model id", "fit a model (Fit)");
runCommand("predict", "model id", "predict with a model (Predict)");

/** Follows a run with progress to its end and prints its result; Ctrl-C offers to cancel it. */
async function follow(run: ActionRun<unknown>, detach: boolean, ctrlC: CtrlC): Promise<void> {
  let started: Action;
  try {
    started = await run.started;
  } catch (error) {
    ctrlC.dispose();
    throw error;
  }
  if (detach) {
    ctrlC.dispose();
    print(format(), actionJson(started), () => started.id);
    return;
  }
  const tty = process.stderr.isTTY === true && format() === "table";
  const bars = follower(started.id, tty);
  ctrlC.onAsk(() => bars.stop());
  const following = (async () => {
    try {
      for await (const p of run.progress) bars.update(p);
    } catch {
      // The stream ends with the action, or breaks; `done` says how it ended.
    }
  })();
  try {
    await run.done;
  } catch (error) {
    if (!(error instanceof PlinthActionError)) throw error;
  } finally {
    ctrlC.dispose();
    bars.stop();
  }
  await following;
  const ended = (await client().actions.getAction({ actionId: started.id, view: ActionView.RESULT })).action!;
  printEnded(ended);
}

/** An ended action: its result on stdout (the prediction, or the model), and the exit code its outcome means. */
function printEnded(action: Action): void {
  const prediction = fromArg(action.result?.prediction);
  const result =
    prediction instanceof Uint8Array ? `${prediction.byteLength} bytes` : prediction === undefined ? undefined : JSON.stringify(prediction);
  print(format(), actionJson(action), () =>
    // Another caller's predict shows a summary for its result: said as such, with the rest.
    action.status === ActionStatus.SUCCEEDED && action.call === 3 && result !== undefined && format() === "table" && !action.redacted
      ? result
      : actionText(action, result),
  );
  if (action.status === ActionStatus.FAILED) process.exitCode = EXIT.failed;
  if (action.status === ActionStatus.CANCELLED) process.exitCode = EXIT.cancelled;
}

// ---- actions ----

program
  .command("actions")
  .description("list actions, newest first: the history, with the running ones")
  .option("--model <id>", "only this model's")
  .option("--type <model type>", "only those on this model type")
  .option("--call <call...>", "only these calls: create, fit, predict")
  .option("--status <status...>", "only these statuses: queued, accessing_data, executing, storing, succeeded, failed, cancelled")
  .option("--error <code>", "only those whose error has this code (plugin_error, interrupted, …)")
  .option("--by <caller>", "only those this caller started")
  .option("--server <name>", "only those this server of a cluster ran (plinth servers)")
  .option("--since <time>", "created at or after: an ISO time (2026-12-07T10:00) or a while ago (90s, 30m, 2h, 7d)", (v) => timeOption(v, "--since"))
  .option("--until <time>", "created before: the same forms", (v) => timeOption(v, "--until"))
  .option("--priority <n>", "only those of this priority (1 to 5)", priorityOption)
  .option("--limit <n>", "at most this many", (v) => positive(v, "--limit"), 50)
  .action(
    async (o: {
      model?: string;
      type?: string;
      call?: string[];
      status?: string[];
      error?: string;
      by?: string;
      server?: string;
      since?: Date;
      until?: Date;
      priority?: number;
      limit: number;
    }) => {
      const statuses = (o.status ?? []).map((s) => {
        const value = ActionStatus[s.toUpperCase() as keyof typeof ActionStatus];
        if (typeof value !== "number" || value === 0)
          throw new UsageError(`--status ${s}: one of queued, accessing_data, executing, storing, succeeded, failed, cancelled`);
        return value;
      });
      const calls = (o.call ?? []).map((c) => {
        const value = CALLS[c as keyof typeof CALLS];
        if (value === undefined) throw new UsageError(`--call ${c}: one of create, fit, predict`);
        return value;
      });
      const { actions } = await client().actions.listActions({
        modelId: o.model ?? "",
        modelType: o.type ?? "",
        calls,
        statuses,
        errorCode: o.error ?? "",
        createdBy: o.by ?? "",
        server: o.server ?? "",
        ...(o.since ? { createdAfter: timestampFromDate(o.since) } : {}),
        ...(o.until ? { createdBefore: timestampFromDate(o.until) } : {}),
        priority: o.priority ?? 0,
        pageSize: o.limit,
      });
      print(format(), actions.map(actionJson), () => actionsTable(actions));
    },
  );

/** The calls as `--call` names them. */
const CALLS = { create: ActionCall.CREATE_INSTANCE, fit: ActionCall.FIT, predict: ActionCall.PREDICT } as const;

/** `--since`/`--until`: an ISO time, or a while before now (90s, 30m, 2h, 7d). */
function timeOption(value: string, what: string): Date {
  const ago = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(value);
  if (ago) return new Date(Date.now() - Number(ago[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[ago[2] as "s" | "m" | "h" | "d"]);
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new UsageError(`${what}: an ISO time (2026-12-07T10:00) or a while ago (90s, 30m, 2h, 7d), got ${value}`);
  return date;
}

program
  .command("action")
  .description("one action: status, progress, result or error, log tail")
  .argument("<id>")
  .action(async (id: string) => {
    const { action } = await client().actions.getAction({ actionId: id, view: ActionView.RESULT });
    const prediction = fromArg(action!.result?.prediction);
    print(format(), actionJson(action!), () => actionText(action!, prediction === undefined ? undefined : JSON.stringify(prediction)));
  });

program
  .command("wait")
  .description("wait for an action to end, with its progress, and print its result")
  .argument("<id>")
  .action(async (id: string) => {
    const c = client();
    const { action } = await c.actions.getAction({ actionId: id });
    if (isEnded(action!)) return printEnded((await c.actions.getAction({ actionId: id, view: ActionView.RESULT })).action!);
    const run: ActionRun<unknown> = {
      started: Promise.resolve(action!),
      progress: { [Symbol.asyncIterator]: () => watchOne(c, id) },
      done: c.actions.waitAction({ actionId: id }).then((r) => r.action),
      cancel: async () => (await c.actions.cancelAction({ actionId: id })).action!,
    };
    const ctrlC = new CtrlC("wait");
    ctrlC.sent(run);
    await follow(run, false, ctrlC);
  });

async function* watchOne(c: PlinthClient, id: string) {
  for await (const update of c.actions.watchAction({ actionId: id })) yield progressOf(update.action!);
}

program
  .command("cancel")
  .description("cancel an action; answers once it has ended")
  .argument("<id>")
  .action(async (id: string) => {
    const { action } = await client().actions.cancelAction({ actionId: id });
    print(format(), actionJson(action!), () => actionText(action!));
  });

program
  .command("logs")
  .description("the last lines the action's plugin printed, each data-access argument's first; --follow prints new ones until it ends")
  .argument("<id>")
  .option("-f, --follow", "keep printing until the action ends")
  .action(async (id: string, o: { follow?: boolean }) => {
    const c = client();
    const { action } = await c.actions.getAction({ actionId: id, view: ActionView.BASIC });
    if (action!.redacted) {
      // The server shows another caller's action without its lines: saying nothing would look like a quiet action.
      process.stderr.write(
        `plinth: action ${id} was started by ${action!.createdBy || "another caller"}: its log lines are not shown to this token (the server's server.auth.visibility; the roles read_all and admin see them)\n`,
      );
      process.exitCode = 10 + Status.PERMISSION_DENIED;
      return;
    }
    // Each source's tail is a window: print what follows the last line printed from it.
    const printed = new Map<string, string[]>();
    const printNew = (a: Action) => {
      for (const { key, prefix, tail } of logSources(a)) {
        const last = printed.get(key)?.at(-1);
        const from = last === undefined ? 0 : tail.lastIndexOf(last) + 1;
        for (const line of tail.slice(from)) process.stdout.write(`${prefix}${line}\n`);
        printed.set(key, tail);
      }
    };
    printNew(action!);
    if (!o.follow || isEnded(action!)) return;
    for await (const update of c.actions.watchAction({ actionId: id })) printNew(update.action!);
  });

/** Where an action's log lines come from: each data-access argument (its lines prefixed with it), then the call itself. */
function logSources(a: Action): { key: string; prefix: string; tail: string[] }[] {
  return [
    ...a.dataAccess.map((d) => ({ key: d.argument, prefix: `${d.argument} ← ${d.name}: `, tail: d.logTail })),
    { key: "", prefix: "", tail: a.logTail },
  ];
}

program
  .command("watch")
  .description("running and recent actions with their progress, live (like top); Ctrl-C ends it")
  .option("--once", "print the table once and exit")
  .option("--limit <n>", "rows at most", (v) => positive(v, "--limit"), 30)
  .action(async (o: { once?: boolean; limit: number }) => {
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    await watch(client(), { once: o.once === true, limit: o.limit, tty: process.stdout.isTTY === true && !o.once, signal: stop.signal });
  });

function priorityOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new UsageError(`--priority: 1 (highest) to 5, got ${value}`);
  return n;
}

function attemptsOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new UsageError(`--retry: attempts in all, 1 to 100, got ${value}`);
  return n;
}

function positive(value: string, what: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${what}: a positive number, got ${value}`);
  return n;
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode === 0 ? 0 : EXIT.usage;
  } else if (error instanceof UsageError) {
    process.stderr.write(`plinth: ${error.message}\n`);
    process.exitCode = EXIT.usage;
  } else if (error instanceof ClientError) {
    process.stderr.write(`plinth: ${Status[error.code]}: ${error.details}\n`);
    process.exitCode = 10 + error.code;
  } else {
    throw error;
  }
} finally {
  if (program.args[0] !== "serve") connected?.close();
}
