/**
 * The Python client (clients/python) as a user gets it: `pip install`ed into a clean virtualenv,
 * then run against a real server, once with each protobuf this machine can install offline:
 * - Debian's python3-protobuf (4.21, C++ runtime), with its python3-grpcio and python3-numpy
 *   through --system-site-packages and its setuptools for the build (.ci/run installs them);
 * - each protobuf within pyproject's range on the local (file://) package indexes pip is set
 *   up with, if any (protobuf's upb runtime), with grpcio, numpy and setuptools from there too.
 * What this machine lacks is skipped, saying why.
 */
import { execFile, spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
/** Debian's python3: the one on PATH may be a pyenv build without Debian's packages. */
const python3 = "/usr/bin/python3";
const client = join(root, "clients/python");
const { PYTHONPATH: _, ...env } = process.env;
const has = (modules: string) => spawnSync(python3, ["-c", `import ${modules}`], { env }).status === 0;

/** How pip installs the client into a new virtualenv. */
interface Setup {
  protobuf: string;
  venv: string[];
  /** The pip that installs: the virtualenv's own, or (with "--without-pip") this python3's, told the virtualenv's python. */
  pip: (venv: string) => string[];
  args: string[];
}

// As the README says to.
const debian: Setup = {
  protobuf: "from Debian",
  venv: ["--system-site-packages"],
  pip: (venv) => [join(venv, "bin/pip")],
  // Offline: setuptools and wheel from Debian rather than from an index.
  args: ["--no-index", "--no-build-isolation", client],
};
const debianMissing = has("ensurepip, grpc, google.protobuf")
  ? ""
  : "Debian's python3 lacks venv or grpcio: apt-get install python3-venv python3-grpcio python3-protobuf";
if (debianMissing) console.log(`skipping the Python client with Debian's packages: ${debianMissing}`);

/** pip's local (file://) indexes, and nothing else of its settings: what it installs then comes from this machine. */
const pipLocal = (() => {
  const config = spawnSync(python3, ["-m", "pip", "config", "list"], { env, encoding: "utf8" }).stdout ?? "";
  const [first, ...more] = config.match(/file:\/\/[^\s']+/g) ?? [];
  return first ? ["--isolated", "--index-url", first, ...more.flatMap((url) => ["--extra-index-url", url])] : undefined;
})();
const offers = new Map<string, string[]>();
/** The versions of a package on those indexes. */
function offered(name: string): string[] {
  if (!pipLocal) return [];
  if (!offers.has(name)) {
    const out = spawnSync(python3, ["-m", "pip", "index", "versions", ...pipLocal, name], { env, encoding: "utf8" }).stdout ?? "";
    offers.set(name, /Available versions: (.+)/.exec(out)?.[1]?.split(", ") ?? []);
  }
  return offers.get(name)!;
}
const range = /"protobuf>=(\d+)\.(\d+)(?:,<(\d+))?"/.exec(readFileSync(join(client, "pyproject.toml"), "utf8"))!;
const [least, leastMinor, below] = [Number(range[1]), Number(range[2]), Number(range[3] ?? Number.POSITIVE_INFINITY)];
const inRange = (v: string) => {
  const [major = 0, minor = 0] = v.split(".").map(Number);
  return (major > least || (major === least && minor >= leastMinor)) && major < below;
};
const fromIndex: Setup[] = (() => {
  const lacking = pipLocal ? ["grpcio", "numpy", "setuptools", "protobuf"].filter((n) => offered(n).length === 0) : [];
  const protobufs = offered("protobuf").filter(inRange);
  const why = !has("ensurepip")
    ? "python3 lacks venv: apt-get install python3-venv"
    : !pipLocal
      ? "pip has no local (file://) index here"
      : lacking.length
        ? `pip's local indexes lack ${lacking.join(", ")}`
        : protobufs.length
          ? ""
          : "pip's local indexes have no protobuf within pyproject's range";
  if (why || !pipLocal) {
    console.log(`skipping the Python client with pip's own protobuf: ${why}`);
    return [];
  }
  // No pip of its own in the virtualenv (ensurepip takes seconds): this python3's pip installs into it.
  return protobufs.map((v) => ({
    protobuf: v,
    venv: ["--without-pip"],
    pip: (venv: string) => [python3, "-m", "pip", "--python", join(venv, "bin/python")],
    args: [...pipLocal, `${client}[numpy]`, `protobuf==${v}`],
  }));
})();

const readme = readFileSync(join(root, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("### From Python"), readme.indexOf("### From TypeScript"));
const example = [...section.matchAll(/```python\n([^`]+)```/g)].map((m) => m[1]!).find((p) => p.includes("plinth_client"))!;

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({
    engine: { sigterm_timeout: 1 },
    plugins: [
      { module: join(root, "plugins/iris/mod.ts") },
      { module: join(root, "plugins/system-test/mod.ts") },
      { module: fixture("payloads.ts") },
      { module: fixture("misbehave.ts") },
      { module: fixture("composite.ts") },
    ],
  });
});
afterAll(() => t?.close());

/** Runs a program with the client installed in a virtualenv, from a folder of its own (not the repository's). */
async function python(venvPython: string, program: string, options: { env?: NodeJS.ProcessEnv; flags?: string[] } = {}): Promise<string> {
  const dir = tempDir();
  writeFileSync(join(dir, "client.py"), program.replace("localhost:50051", `127.0.0.1:${t.port}`));
  return (await run(venvPython, [...(options.flags ?? []), "client.py"], { cwd: dir, env: { ...env, ...options.env } })).stdout;
}

describe.skipIf(debianMissing !== "")("the Python client, protobuf from Debian", () => suite(debian));
describe.each(fromIndex)("the Python client, protobuf $protobuf from pip's local index", (setup) => suite(setup));

function suite(setup: Setup): void {
  let venvPython = "";
  beforeAll(async () => {
    const venv = join(tempDir(), "venv");
    await run(python3, ["-m", "venv", ...setup.venv, venv], { env });
    const [pip, ...pipArgs] = setup.pip(venv);
    await run(pip!, [...pipArgs, "install", "--no-cache-dir", "--no-compile", "--disable-pip-version-check", ...setup.args], { env });
    venvPython = join(venv, "bin/python");
  }, 300_000);

  it("installs with pip into a clean virtualenv, leaving no build/ or *.egg-info in clients/python", async () => {
    const out = await python(
      venvPython,
      `
import sys
import google.protobuf
import plinth.v1.arg_pb2
import plinth_client
print(plinth_client.__file__.startswith(sys.prefix), plinth.v1.arg_pb2.__file__.startswith(sys.prefix), google.protobuf.__version__)
`,
    );
    const [inVenv, stubsInVenv, version] = out.trim().split(" ");
    expect([inVenv, stubsInVenv]).toEqual(["True", "True"]);
    if (setup.protobuf !== "from Debian") expect(version).toBe(setup.protobuf);
    expect(readdirSync(client).filter((n) => n === "build" || n.endsWith(".egg-info"))).toEqual([]);
  });

  it("runs on protobuf's pure-Python runtime, without the deprecated descriptor calls its C runtimes refuse", async () => {
    // Stubs from a protoc older than 3.20 create descriptors directly: protobuf 4.21+ warns of
    // it here, and its upb runtime (pip's) refuses: "Descriptors cannot be created directly".
    const out = await python(
      venvPython,
      `
from google.protobuf.internal import api_implementation
from plinth_client import Client

with Client("localhost:50051") as client:
    echo = client.create("payloads.Echo").result().model_id
    back = client.predict(echo, args=[{"n": [1, 2.5], "b": b"x"}]).result().prediction
    print(api_implementation.Type(), back["n"], back["b"])
`,
      { env: { PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION: "python" }, flags: ["-W", "error::DeprecationWarning"] },
    );
    expect(out.trim()).toBe("python [1.0, 2.5] b'x'");
  });

  it("runs the README's example: Iris trained with its progress followed, two flowers predicted", async () => {
    const lines = (await python(venvPython, example)).trim().split("\n");
    expect(lines).toContain("succeeded ['succeeded', 'succeeded']");
    // Each progress line is a status and the data-access statuses; whether the short
    // data-access phase is seen depends on when the watch starts, so it is not required.
    const progress = lines.slice(0, lines.indexOf("succeeded ['succeeded', 'succeeded']") + 1);
    for (const l of progress) expect(l).toMatch(/^(queued|accessing_data|executing|storing|succeeded) \[('\w+'(, )?)*\]$/);
    expect(lines.at(-2)).toMatch(/^accuracy: 0\.9\d+$/);
    expect(lines.at(-1)).toBe("species: ['setosa', 'virginica']");
  });

  it("sends and gets back numpy tensors, bytes and large JSON; raises ActionError on a failure and a cancel", async () => {
    const out = await python(
      venvPython,
      `
import threading
import grpc
import numpy as np
from plinth_client import ActionError, Client

with Client("localhost:50051") as client:
    iris = [p for p in client.plugins() if p["name"] == "iris"][0]
    tree = [m for m in iris["modelTypes"] if m["name"] == "iris.DecisionTree"][0]
    print("schema", tree["schemas"][0]["call"], tree["schemas"][0]["kwargs"]["properties"]["max_depth"]["default"])
    try:
        client.create("iris.DecisionTree", kwargs={"max_depth": "deep"})
    except grpc.RpcError as e:
        print("refused", e.code().name, e.details())
    echo = client.create("payloads.Echo").result().model_id
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    y = client.predict(echo, args=[x]).result().prediction
    print("tensor", type(y).__name__, y.dtype, y.shape, bool(np.array_equal(x, y)))
    print("bytes", client.predict(echo, args=[b"\\x00\\x01\\xff"]).result().prediction)
    batch = [i / 7 for i in range(5000)]
    print("json", client.predict(echo, args=[batch]).result().prediction == batch)
    first = client.predict(echo, args=[1], request_id="py-" + echo, priority=1)
    again = client.predict(echo, args=[1], request_id="py-" + echo, priority=1)
    print("once", first.action.id == again.action.id, first.action.priority)
    both = client.create("composite.Model").result().model_id
    back = client.predict(both, args=[{"x": x, "blobs": [b"ab", b"c"], "label": "n"}]).result().prediction
    print("map", sorted(back), bool(np.array_equal(back["x"], x)), back["blobs"], back["label"])
    bad = client.create("misbehave.Model").result().model_id
    try:
        client.predict(bad, kwargs={"mode": "throw"}).result()
    except ActionError as e:
        print("failed", e.status, e.code, "misbehave.ts" in e.plugin_stack)
    model = client.create("systest.Model").result().model_id
    run = client.fit(model, kwargs={"sleep": 30})
    for p in run.progress():
        if p.status == "executing":
            break
    run.cancel()
    try:
        run.result()
    except ActionError as e:
        print("cancelled", e.status, e.code, e.action.cancel.by)
    # wait=True: the answer carries the ended action, so result() calls nothing more
    # (on a closed channel, a call would raise).
    waited = client.predict(echo, args=[["a", "b"]], wait=True)
    client.channel.close()
    print("one trip", waited.result().prediction)
`,
    );
    expect(out.trim().split("\n")).toEqual([
      "schema instantiate 10.0",
      'refused INVALID_ARGUMENT kwargs.max_depth: must be an integer ≥ 1, got "deep"',
      "tensor ndarray float32 (3, 4) True",
      "bytes b'\\x00\\x01\\xff'",
      "json True",
      "once True 1",
      "map ['blobs', 'label', 'x'] True [b'ab', b'c'] n",
      "failed failed plugin_error True",
      "cancelled cancelled cancelled CancelAction",
      "one trip ['a', 'b']",
    ]);
  });
}
