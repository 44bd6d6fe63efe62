/**
 * The README's `plinth` command lines (the Quickstart's and those of "The `plinth` command
 * line"), run as written, in order, by a shell, against a real server with the example
 * plugins. The ids the README makes up stand for the ones printed by the command whose
 * comment names them first; `<model id>` for the model the last create made.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { root, startTestServer, type TestServer } from "./helpers/server.ts";
import { tempDir } from "./helpers/temp.ts";

const readme = readFileSync(join(root, "README.md"), "utf8");

interface Line {
  /** The commands of the line (`a; b` is two). */
  commands: string[];
  comment: string;
  /** What it prints, from the comment line below it or a comment that is JSON. */
  output?: string;
}

/** The lines of a section's sh blocks that run `npx plinth`. */
function commandLines(from: string, to: string): Line[] {
  const section = readme.slice(readme.indexOf(from), readme.indexOf(to));
  const lines: Line[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]+?)```/g)) {
    for (const text of block[1]!.split("\n")) {
      if (text.startsWith("# ") && lines.length) lines.at(-1)!.output = text.slice(2);
      if (!text.startsWith("npx plinth")) continue;
      const [command, comment = ""] = text.split(/\s+#\s(.*)/);
      const line: Line = { commands: command!.split("; "), comment };
      if (/^[[{"]/.test(comment)) line.output = comment;
      lines.push(line);
    }
  }
  return lines;
}

const ID = /\b[ma]-[0-9a-z]{20}\b/g;

let t: TestServer;
let cwd: string;
/**
 * A folder whose `npx plinth` runs the command line without npm's own second of start-up
 * each time: the run's bundle of cli/main.ts (test/global-server-bundle.ts), the same code
 * without tsx's loading of each module (the bin itself is cli.test's and package.test's).
 */
let npxBin: string;
beforeAll(async () => {
  t = await startTestServer({ engine: { sigterm_timeout: 1 } });
  // Inside the clone, as a user's shell would be: npx finds the package's bin from there.
  cwd = tempDir("readme-cli-", join(root, "test-artifacts"));
  npxBin = tempDir("readme-cli-npx-");
  const npx = join(npxBin, "npx");
  writeFileSync(
    npx,
    `#!/bin/sh\n[ "$1" = plinth ] || { echo "this npx runs plinth only" >&2; exit 127; }\nshift\nexec '${process.execPath}' '${inject("cliBundle")}' "$@"\n`,
  );
  chmodSync(npx, 0o755);
});
afterAll(() => t?.close());

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` with sh; with `stopWhen`, stops it as Ctrl-C would once its output matches;
 * `npx`: npm's (the real bin, cli/plinth.mjs), or the run's bundle of the command line run directly.
 */
function sh(command: string, npx: Npx, stopWhen?: RegExp): { child: ChildProcess; ran: Promise<Ran> } {
  const PATH = npx === "bin" ? `${npxBin}:${process.env.PATH}` : process.env.PATH;
  const child = spawn("sh", ["-c", command], {
    cwd,
    detached: true, // a process group of its own, as a terminal's job: Ctrl-C reaches all of it
    env: { ...process.env, PATH, PLINTH_ADDRESS: `127.0.0.1:${t.port}`, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let stopped = false;
  child.stdout!.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stopped || !stopWhen?.test(stdout)) return;
    stopped = true;
    process.kill(-child.pid!, "SIGINT");
  });
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  // "close": the output of what it left in the background too.
  const ran = once(child, "close").then(([code]) => ({ code: code as number | null, stdout, stderr }));
  return { child, ran };
}

type Npx = "npm" | "bin";

/** Runs the lines in order, checking each command's exit code and the output the README shows. */
async function runAll(lines: Line[], ids: Map<string, string>, npx: Npx): Promise<void> {
  let lastModel: string | undefined;
  const background: { command: string; line: Line; ran: Promise<Ran> }[] = [];
  const check = (command: string, line: Line, ran: Ran) => {
    const expected = Number(/exit code (\d+)/.exec(line.comment)?.[1] ?? 0);
    expect({ command, code: ran.code, stderr: ran.stderr }).toEqual({ command, code: expected, stderr: expect.any(String) });
  };
  for (const line of lines) {
    for (const written of line.commands) {
      const command = written
        .replace(ID, (id) => {
          const real = ids.get(id);
          if (!real) throw new Error(`${written}: ${id} is not printed by any command above it in the README`);
          return real;
        })
        .replace("<model id>", () => lastModel ?? "<no model yet>");
      // `command &`: started here, its exit code looked at once the rest has run.
      if (command.endsWith(" &")) {
        background.push({ command: written, line, ran: sh(command.slice(0, -2), npx).ran });
        continue;
      }
      // A live view runs until Ctrl-C: stopped once it has drawn its table.
      const live = /^npx plinth watch\s*$/.test(command);
      const ran = await sh(command, npx, live ? /^ID +CALL +MODEL +STATUS/m : undefined).ran;
      if (live) expect(ran.stdout).toMatch(/^ID +CALL +MODEL +STATUS +PROGRESS +TIME +ERROR$/m);
      else check(written, line, ran);
      if (line.output !== undefined) expect(ran.stdout.trim()).toBe(line.output);
      // The ids this command's comment introduces: the first of their kind it printed.
      for (const id of line.comment.match(ID) ?? []) {
        if (ids.has(id)) continue;
        const printed = ran.stdout.match(ID)?.find((p) => p[0] === id[0]);
        if (!printed) throw new Error(`${written} printed no ${id[0]}- id:\n${ran.stdout}`);
        ids.set(id, printed);
      }
      if (/^npx plinth create /.test(command)) lastModel = ran.stdout.match(ID)?.find((p) => p.startsWith("m-"));
    }
  }
  for (const { command, line, ran } of background) check(command, line, await ran);
}

// Twenty-odd npx runs one after the other: several seconds each on a busy machine.
describe("the README's plinth commands, run as written", { timeout: 900_000 }, () => {
  it("the Quickstart's: create, fit, predict and watch the Iris model", async () => {
    const lines = commandLines("## Quickstart", "## The `plinth` command line");
    expect(lines.map((l) => l.commands[0]!.split(" ").slice(0, 3).join(" "))).toEqual([
      "npx plinth create",
      "npx plinth fit",
      "npx plinth predict",
      "npx plinth watch",
    ]);
    await runAll(lines, new Map(), "npm");
  });

  it("The plinth command line's, every one", async () => {
    const lines = commandLines("## The `plinth` command line", "## Using it from grpcurl");
    expect(lines.length).toBeGreaterThan(10);
    const ids = new Map<string, string>();
    // The command line's own code, bundled for the run (the Quickstart's lines go through
    // npm's npx and the real bin): twenty-odd commands, each a second of a core cheaper.
    await runAll(lines, ids, "bin");
    // What they did, as the server saw it: the detached fit was cancelled, the added model deleted.
    const introduced = (command: string) => ids.get(lines.find((l) => l.commands[0]!.startsWith(command))!.comment.match(ID)![0])!;
    const detached = (await t.actions.getAction({ actionId: introduced("npx plinth fit m-0mwv3b1k4000a1f2c3d4") })).action!;
    expect(detached.cancel?.by).toBe("CancelAction");
    await expect(t.engine.getModel({ modelId: introduced("npx plinth add ") })).rejects.toThrow(/not found/);
  });
});
