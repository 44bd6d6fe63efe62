/**
 * Certificates made at test time with Debian's openssl, in a temporary folder: a CA, a
 * server certificate for localhost and 127.0.0.1, and client certificates by common name.
 * No private key is committed. The benchmarks use it too, with a folder of their own.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./temp.ts";

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
const openssl = (dir: string, args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });

export interface Pair {
  cert: string;
  key: string;
}

export class TestCa {
  readonly ca: string;
  readonly #caKey: string;
  #serial = 0;

  constructor(
    name = "Plinth test CA",
    readonly dir = tempDir("plinth-certs-"),
  ) {
    this.ca = join(dir, "ca.crt");
    this.#caKey = join(dir, "ca.key");
    openssl(this.dir, ["req", "-x509", ...EC, "-days", "2", "-subj", `/CN=${name}`, "-keyout", this.#caKey, "-out", this.ca]);
  }

  /** A certificate signed by this CA; `ext` as in an openssl extfile. */
  issue(name: string, cn: string, ext: string): Pair {
    const base = join(this.dir, `${name}-${++this.#serial}`);
    writeFileSync(`${base}.ext`, `${ext}\n`);
    openssl(this.dir, ["req", ...EC, "-subj", `/CN=${cn}`, "-keyout", `${base}.key`, "-out", `${base}.csr`]);
    openssl(
      this.dir,
      ["x509", "-req", "-in", `${base}.csr`, "-CA", this.ca, "-CAkey", this.#caKey, "-CAcreateserial", "-days", "2"].concat([
        "-extfile",
        `${base}.ext`,
        "-out",
        `${base}.crt`,
      ]),
    );
    return { cert: `${base}.crt`, key: `${base}.key` };
  }

  server(): Pair {
    return this.issue("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
  }

  client(cn: string): Pair {
    return this.issue("client", cn, "extendedKeyUsage=clientAuth");
  }
}

/** The files' contents, as grpc-js channel credentials want them. */
export const read = (path: string) => readFileSync(path);
