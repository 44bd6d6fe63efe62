/**
 * TLS and mutual TLS with certificates made at test time: who a certificate makes the
 * caller, what a connection without the right certificate gets, certificates read again
 * on SIGHUP without closing the port, and the refusal to serve the network unprotected.
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { copyFileSync } from "node:fs";
import { connect } from "node:tls";
import { ChannelCredentials, createChannel, Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { ActionStatus } from "../gen/plinth/v1/action_pb.ts";
import { read, TestCa } from "./helpers/certs.ts";
import { clientsOf, root, startTestServer, type TestServer } from "./helpers/server.ts";
import { type ServerProcess, startBundledProcess, writeConfig } from "./helpers/server-process.ts";
import { expectStatus } from "./helpers/status.ts";

const servers: TestServer[] = [];
const processes: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((t) => t.close()));
  for (const p of processes.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGTERM");
      await once(p.child, "exit");
    }
  }
});

const plugins = [{ module: "plugins/system-test/mod.ts" }];

/** The serial number of the certificate a new TLS connection to the port is shown. */
async function servedSerial(port: number, ca: string): Promise<string> {
  const socket = connect({ host: "127.0.0.1", port, servername: "localhost", ca: read(ca), ALPNProtocols: ["h2"] });
  try {
    await once(socket, "secureConnect");
    return socket.getPeerCertificate().serialNumber;
  } finally {
    socket.destroy();
  }
}

describe("TLS", () => {
  it("serves clients that trust its CA, with tokens; a plaintext client cannot talk to it", async () => {
    const ca = new TestCa();
    const server = ca.server();
    const secret = "alice-0123456789abcdef0123456789";
    const t = await startTestServer(
      {
        plugins,
        server: { tls: server, auth: { tokens: [{ name: "alice", sha256: createHash("sha256").update(secret).digest("hex"), roles: ["run"] }] } },
      },
      { credentials: ChannelCredentials.createSsl(read(ca.ca)), host: "localhost", token: secret },
    );
    servers.push(t);
    const created = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!;
    expect(created.status).toBe(ActionStatus.SUCCEEDED);
    expect(created.createdBy).toBe("alice");
    const plaintext = createChannel(`127.0.0.1:${t.port}`);
    try {
      await expectStatus(clientsOf(plaintext).engine.listModels({}, { deadline: new Date(Date.now() + 60_000) }), Status.UNAVAILABLE, /./);
    } finally {
      plaintext.close();
    }
    // A client that does not trust the CA fails the handshake.
    const other = new TestCa("Another CA");
    const untrusting = createChannel(`localhost:${t.port}`, ChannelCredentials.createSsl(read(other.ca)));
    try {
      await expectStatus(clientsOf(untrusting).engine.listModels({}, { deadline: new Date(Date.now() + 60_000) }), Status.UNAVAILABLE, /./);
    } finally {
      untrusting.close();
    }
  });
});

describe("mutual TLS", () => {
  it("the client certificate's common name is the caller, with the roles the config gives its subject", async () => {
    const ca = new TestCa();
    const trainer = ca.client("trainer");
    const t = await startTestServer(
      { plugins, server: { tls: { ...ca.server(), client_ca: ca.ca }, auth: { certificates: [{ subject: "CN=trainer", roles: ["run"] }] } } },
      { credentials: ChannelCredentials.createSsl(read(ca.ca), read(trainer.key), read(trainer.cert)), host: "localhost" },
    );
    servers.push(t);
    const created = (await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!;
    expect(created.createdBy).toBe("trainer");
    expect((await t.actions.listActions({ createdBy: "trainer" })).actions.map((a) => a.id)).toEqual([created.id]);
    // run, not admin.
    await expectStatus(
      t.engine.deleteModel({ modelId: created.modelId }),
      Status.PERMISSION_DENIED,
      /^\/plinth\.v1\.EngineService\/DeleteModel needs the admin role; trainer has run$/,
    );

    // A certificate the CA signed, for a subject the config gives no role: known, but may do nothing.
    const stranger = ca.client("stranger");
    const strangerChannel = createChannel(`localhost:${t.port}`, ChannelCredentials.createSsl(read(ca.ca), read(stranger.key), read(stranger.cert)));
    try {
      await expectStatus(clientsOf(strangerChannel).engine.listModels({}), Status.PERMISSION_DENIED, /needs the read role; stranger has no role$/);
    } finally {
      strangerChannel.close();
    }

    // No certificate, or one another CA signed: the handshake fails.
    const other = new TestCa("Another CA");
    const forged = other.client("trainer");
    for (const credentials of [
      ChannelCredentials.createSsl(read(ca.ca)),
      ChannelCredentials.createSsl(read(ca.ca), read(forged.key), read(forged.cert)),
    ]) {
      const channel = createChannel(`localhost:${t.port}`, credentials);
      try {
        await expectStatus(clientsOf(channel).engine.listModels({}, { deadline: new Date(Date.now() + 60_000) }), Status.UNAVAILABLE, /./);
      } finally {
        channel.close();
      }
    }
  });

  it("a bearer token, when sent, is the identity rather than the certificate", async () => {
    const ca = new TestCa();
    const trainer = ca.client("trainer");
    const secret = "ops-0123456789abcdef0123456789";
    process.env.PLINTH_TEST_OPS = secret;
    const t = await startTestServer(
      {
        plugins,
        server: {
          tls: { ...ca.server(), client_ca: ca.ca },
          auth: { certificates: [{ subject: "trainer", roles: ["run"] }], tokens: [{ name: "ops", env: "PLINTH_TEST_OPS", roles: ["admin"] }] },
        },
      },
      { credentials: ChannelCredentials.createSsl(read(ca.ca), read(trainer.key), read(trainer.cert)), host: "localhost", token: secret },
    ).finally(() => delete process.env.PLINTH_TEST_OPS);
    servers.push(t);
    expect((await t.engine.createInstance({ modelType: "systest.Model", wait: true })).action!.createdBy).toBe("ops");
  });
});

describe("certificates read again on SIGHUP", () => {
  it("new connections get the new certificate, the port stays open and open connections go on", async () => {
    const ca = new TestCa();
    const first = ca.server();
    const dir = ca.dir;
    copyFileSync(first.cert, `${dir}/live.crt`);
    copyFileSync(first.key, `${dir}/live.key`);
    const config = writeConfig(
      [
        "server:",
        "  tls: { cert: live.crt, key: live.key }",
        "backend:",
        "  path: plinth.db",
        "plugins:",
        `  - module: ${root}plugins/system-test/mod.ts`,
      ].join("\n"),
      dir,
    );
    const p = startBundledProcess(["--config", config, "--address", "127.0.0.1:0"]);
    processes.push(p);
    const port = await p.port;
    const before = await servedSerial(port, ca.ca);
    const channel = createChannel(`localhost:${port}`, ChannelCredentials.createSsl(read(ca.ca)));
    const { engine } = clientsOf(channel);
    try {
      expect((await engine.listPlugins({})).plugins).toHaveLength(1);

      // A renewed certificate in place, then SIGHUP to the server's pid.
      const renewed = ca.server();
      copyFileSync(renewed.cert, `${dir}/live.crt`);
      copyFileSync(renewed.key, `${dir}/live.key`);
      const reloaded = new Promise<void>((resolve) => {
        const check = () => p.output().includes("TLS files read again") && resolve();
        p.child.stdout!.on("data", check);
      });
      p.child.kill("SIGHUP");
      await reloaded;
      const after = await servedSerial(port, ca.ca);
      expect(after).not.toBe(before);
      // The connection made before goes on.
      expect((await engine.listPlugins({})).plugins).toHaveLength(1);

      // A key that does not match its certificate: refused, the last good pair stays.
      copyFileSync(first.key, `${dir}/live.key`);
      const failed = new Promise<void>((resolve) => {
        const check = () => p.output().includes("the previous ones stay in use") && resolve();
        p.child.stdout!.on("data", check);
      });
      p.child.kill("SIGHUP");
      await failed;
      expect(await servedSerial(port, ca.ca)).toBe(after);
      expect(p.child.exitCode).toBeNull();
    } finally {
      channel.close();
    }
  });
});

describe("safe defaults on the network", () => {
  it("refuses an address other than loopback with neither authentication nor TLS, and says how to go on", async () => {
    const config = writeConfig("backend:\n  path: plinth.db\n");
    const p = startBundledProcess(["--config", config, "--address", "0.0.0.0:0"]);
    processes.push(p);
    const [code] = await once(p.child, "exit");
    expect(code).not.toBe(0);
    expect(p.output()).toContain(
      "config server.address: 0.0.0.0:0 is reachable from other machines, and the server has neither authentication (server.auth) nor TLS (server.tls)",
    );
    expect(p.output()).toContain("set server.insecure: true");
  });

  it("serves it when the config says server.insecure: true", async () => {
    const config = writeConfig(`server:\n  insecure: true\nbackend:\n  path: plinth.db\nplugins:\n  - module: ${root}plugins/system-test/mod.ts\n`);
    const p = startBundledProcess(["--config", config, "--address", "0.0.0.0:0"]);
    processes.push(p);
    const port = await p.port;
    const channel = createChannel(`127.0.0.1:${port}`);
    try {
      expect((await clientsOf(channel).engine.listPlugins({})).plugins).toHaveLength(1);
    } finally {
      channel.close();
    }
  });
});
