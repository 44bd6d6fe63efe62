/**
 * The README's "Running on a network", run as written: its shell blocks make the
 * certificates, tokens and config; `npm start` serves them; its grpcurl commands (argv
 * expanded by bash, then sent by grpc-js as grpcurl would send them) get the answers
 * and the errors the README shows; its Python client connects over TLS with a token;
 * then the same with mutual TLS.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { type DescMethod, fromBinary, fromJsonString, toBinary, toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { Health } from "../gen/grpc/health/v1/health_pb.ts";
import { ActionService } from "../gen/plinth/v1/action_service_pb.ts";
import { EngineService } from "../gen/plinth/v1/engine_service_pb.ts";
import { StateService } from "../gen/plinth/v1/state_service_pb.ts";
import { isAlive } from "./helpers/processes.ts";
import { root } from "./helpers/server.ts";
import { descendantsOf, type ServerProcess, startNpm } from "./helpers/server-process.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("## Running on a network"), readme.indexOf("## Where data lives"));
const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, body: m[2]! }));
const pythonStubs = /```sh\n(mkdir -p python-stubs[^\n]*)\n```/.exec(readme)![1]!;
/** Debian's python3 first: the one on PATH may be a pyenv build without Debian's packages. */
const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH}` };

const started: ServerProcess[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) await stop(p);
});

async function stop(p: ServerProcess) {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = once(p.child, "exit");
  process.kill(-p.child.pid!, "SIGTERM");
  await exited;
  for (const pid of descendantsOf(p.child.pid!)) if (isAlive(pid)) process.kill(pid, "SIGKILL");
}

/** `npm start -- --config <dir>/<file>` on an ephemeral port (the README's 50051 may be taken), metrics too. */
async function serve(dir: string, file: string) {
  const config = readFileSync(join(dir, file), "utf8").replace("127.0.0.1:9464", "127.0.0.1:0");
  writeFileSync(join(dir, file), config);
  const p = startNpm(["--config", join(dir, file), "--address", "127.0.0.1:0"]);
  started.push(p);
  return { p, port: await p.port };
}

/** The block's commands, one per line once continuations are joined, each with the "# ERROR" comment after it, if any. */
function commands(body: string): { command: string; error?: { code: string; message: string } }[] {
  const lines = body
    .replace(/\\\n\s*/g, "")
    .split("\n")
    .filter(Boolean);
  const out: { command: string; error?: { code: string; message: string } }[] = [];
  for (const line of lines) {
    const error = /^# ERROR: Code: (\w+) {2}Message: (.*)$/.exec(line);
    if (error) out.at(-1)!.error = { code: error[1]!, message: error[2]! };
    else if (!line.startsWith("#")) out.push({ command: line });
  }
  return out;
}

/** grpcurl's argv after the shell has expanded it, in `dir`. */
async function argv(command: string, dir: string): Promise<string[]> {
  const { stdout } = await run("bash", ["-c", `grpcurl() { printf '%s\\0' "$@"; }\n${command}`], { cwd: dir });
  return stdout.split("\0").slice(0, -1);
}

const methods = new Map<string, DescMethod>(
  [EngineService, ActionService, StateService, Health].flatMap((s) => s.methods.map((m): [string, DescMethod] => [`${s.typeName}/${m.name}`, m])),
);
/** grpcurl's names for gRPC status codes. */
const goName = (code: grpc.status) => grpc.status[code]!.toLowerCase().replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase());

/** What grpcurl does with those arguments: reflection, then `list` or one unary call with a JSON body. */
async function grpcurl(
  args: string[],
  dir: string,
  port: number,
): Promise<{ json?: Record<string, unknown>; error?: { code: string; message: string } }> {
  const flags: Record<string, string[]> = {};
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("-")) positional.push(arg);
    else {
      flags[arg] ??= [];
      flags[arg].push(args[++i]!);
    }
  }
  const [address, method] = positional;
  expect(address).toBe("localhost:50051");
  const file = (name: string) => (flags[name] ? readFileSync(join(dir, flags[name][0]!)) : null);
  const credentials = grpc.credentials.createSsl(file("-cacert"), file("-key"), file("-cert"));
  const client = new grpc.Client(`localhost:${port}`, credentials);
  const metadata = new grpc.Metadata();
  for (const header of flags["-H"] ?? []) metadata.add(header.slice(0, header.indexOf(":")).trim(), header.slice(header.indexOf(":") + 1).trim());
  const bytes = (b: Buffer) => b;
  const failure = (error: grpc.ServiceError) => ({ error: { code: goName(error.code), message: error.details } });
  try {
    // grpcurl asks reflection first (list_services here), with the same headers, whatever the command.
    const listed = await new Promise<{ services?: string; error?: { code: string; message: string } }>((resolve) => {
      const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", bytes, bytes, metadata, {});
      call.on("data", (response: Buffer) => {
        resolve({ services: response.toString("latin1") });
        call.end();
      });
      call.on("error", (error: grpc.ServiceError) => resolve(failure(error)));
      call.write(Buffer.from([0x3a, 0x00]));
    });
    if (listed.error || method === "list") return listed.error ? { error: listed.error } : { json: { services: listed.services } };
    const desc = methods.get(method!)!;
    expect(desc, `${method} is one of our methods`).toBeDefined();
    const request = toBinary(desc.input, fromJsonString(desc.input, flags["-d"]?.[0] ?? "{}"));
    return await new Promise((resolve) => {
      client.makeUnaryRequest(`/${desc.parent.typeName}/${desc.name}`, bytes, bytes, Buffer.from(request), metadata, (error, response) => {
        if (error) resolve(failure(error));
        else resolve({ json: toJson(desc.output, fromBinary(desc.output, response!)) as Record<string, unknown> });
      });
    });
  } finally {
    client.close();
  }
}

describe("the README's Running on a network", () => {
  it("makes certificates and tokens, serves TLS with roles, and answers grpcurl and Python as shown; then mutual TLS", async () => {
    expect(blocks.map((b) => b.lang)).toEqual(["sh", "sh", "python", "sh", "yaml", "sh"]);
    const [setup, calls, python, clientCert, mtlsYaml, mtlsCalls] = blocks;
    const dir = tempDir("plinth-network-");
    await run("bash", ["-e", "-c", setup!.body], { cwd: dir });
    const config = parseYaml(readFileSync(join(dir, "plinth.yaml"), "utf8"));
    // The config holds the hash of alice's token, not the token.
    const alice = readFileSync(join(dir, "alice.token"), "utf8").trim();
    expect(alice).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(config)).not.toContain(alice);

    const { p, port } = await serve(dir, "plinth.yaml");
    const metricsLine = p
      .output()
      .split("\n")
      .find((l) => l.includes('"msg":"metrics"'));
    expect(metricsLine).toBeDefined();

    // Every grpcurl command: the answer, or exactly the error the README shows.
    let created: Record<string, { id: string; createdBy: string }> | undefined;
    for (const { command, error } of commands(calls!.body)) {
      const result = await grpcurl(await argv(command, dir), dir, port);
      expect(result.error, command).toEqual(error);
      if (command.includes("CreateInstance")) created = result.json as typeof created;
      if (command.includes("ListActions")) {
        const listed = (result.json as { actions: { id: string; createdBy: string }[] }).actions;
        expect(listed.map((a) => a.id)).toEqual([created!.action!.id]);
      }
      if (command.endsWith(" list") && !error) expect(result.json?.services).toContain("plinth.v1.EngineService");
    }
    expect(created?.action?.createdBy).toBe("alice");

    // The Python client, with stubs generated as the README's Python section says.
    cpSync(join(root, "proto"), join(dir, "proto"), { recursive: true });
    await run("sh", ["-c", pythonStubs], { cwd: dir, env });
    writeFileSync(join(dir, "client.py"), python!.body.replace("localhost:50051", `localhost:${port}`));
    const { stdout } = await run("python3", ["client.py"], { cwd: dir, env });
    expect(stdout).toBe("created by: alice\n");
    expect(python!.body).toContain("# created by: alice");
    await stop(p);

    // Mutual TLS: the client certificate, the README's YAML merged into the config.
    await run("bash", ["-e", "-c", clientCert!.body], { cwd: dir });
    const addition = parseYaml(mtlsYaml!.body) as { server: { tls: object; auth: { certificates: object[] } } };
    config.server.tls = addition.server.tls;
    config.server.auth.certificates = addition.server.auth.certificates;
    writeFileSync(join(dir, "mtls.yaml"), toYaml(config));
    const mtls = await serve(dir, "mtls.yaml");
    const [call] = commands(mtlsCalls!.body);
    const answer = await grpcurl(await argv(call!.command, dir), dir, mtls.port);
    expect(answer.error).toBeUndefined();
    expect((answer.json as { action: { createdBy: string } }).action.createdBy).toBe("trainer-bot");
    // Without a client certificate, not even a connection.
    const bare = await grpcurl(["-cacert", "ca.crt", "localhost:50051", "plinth.v1.EngineService/ListModels"], dir, mtls.port);
    expect(bare.error?.code).toBe("Unavailable");
    // Python with the client certificate, as the README's sentence says.
    const mtlsPython = python!.body
      .replace("localhost:50051", `localhost:${mtls.port}`)
      .replace(
        /credentials = grpc\.composite_channel_credentials\([\s\S]*?\n\)\n/,
        'credentials = grpc.ssl_channel_credentials(root_certificates=open("ca.crt", "rb").read(), private_key=open("client.key", "rb").read(), certificate_chain=open("client.crt", "rb").read())\n',
      );
    writeFileSync(join(dir, "mtls.py"), mtlsPython);
    expect((await run("python3", ["mtls.py"], { cwd: dir, env })).stdout).toBe("created by: trainer-bot\n");
  });
});
