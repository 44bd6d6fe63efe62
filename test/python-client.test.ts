/**
 * The Python client (clients/python) against a real server, with Debian's python3-grpcio
 * (and numpy for tensors); .ci/run installs them. Without grpcio the tests are skipped,
 * saying why.
 */
import { execFile, execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const run = promisify(execFile);
/** Debian's python3 first: the one on PATH may be a pyenv build without Debian's packages. */
const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH}`, PYTHONPATH: join(root, "clients/python") };
const missing = (() => {
  try {
    execFileSync("python3", ["-c", "import grpc, google.protobuf"], { env, stdio: "pipe" });
    return "";
  } catch {
    return "python3 has no grpcio: apt-get install python3-grpcio python3-protobuf (or pip install grpcio protobuf)";
  }
})();
if (missing) console.log(`skipping the Python client's tests: ${missing}`);

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

async function python(program: string): Promise<string> {
  const file = join(tempDir(), "client.py");
  writeFileSync(file, program.replace("localhost:50051", `127.0.0.1:${t.port}`));
  return (await run("python3", [file], { env })).stdout;
}

describe.skipIf(missing !== "")("the Python client", () => {
  it("runs the README's example: Iris trained with its progress followed, two flowers predicted", async () => {
    const lines = (await python(example)).trim().split("\n");
    expect(lines).toContain("succeeded ['succeeded', 'succeeded']");
    // Each progress line is a status and the data-access statuses; whether the short
    // data-access phase is seen depends on when the watch starts, so it is not required.
    const progress = lines.slice(0, lines.indexOf("succeeded ['succeeded', 'succeeded']") + 1);
    for (const l of progress) expect(l).toMatch(/^(queued|accessing_data|executing|storing|succeeded) \[('\w+'(, )?)*\]$/);
    expect(lines.at(-2)).toMatch(/^accuracy: 0\.9\d+$/);
    expect(lines.at(-1)).toBe("species: ['setosa', 'virginica']");
  });

  it("sends and gets back numpy tensors, bytes and large JSON; raises ActionError on a failure and a cancel", async () => {
    const out = await python(`
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
`);
    expect(out.trim().split("\n")).toEqual([
      "schema instantiate 10.0",
      'refused INVALID_ARGUMENT kwargs.max_depth: must be an integer ≥ 1, got "deep"',
      "tensor ndarray float32 (3, 4) True",
      "bytes b'\\x00\\x01\\xff'",
      "json True",
      "map ['blobs', 'label', 'x'] True [b'ab', b'c'] n",
      "failed failed plugin_error True",
      "cancelled cancelled cancelled CancelAction",
    ]);
  });
});
