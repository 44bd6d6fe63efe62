/**
 * TLS for the gRPC port: the certificate files, read again on reload() (SIGHUP) and
 * handed to grpc-js, which uses them for new connections without closing the port.
 * With a client CA, clients must present a certificate it signed (mutual TLS), and its
 * subject's common name becomes the call's PEER_SUBJECT metadata — set only here, from
 * the connection, never from what a client sent.
 */
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaCertificateUpdateListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityCertificateUpdateListener = grpc.experimental.IdentityCertificateUpdateListener;

/** The metadata key carrying the client certificate's common name into the call. */
export const PEER_SUBJECT = "plinth-peer-subject";

export interface TlsFiles {
  cert: string;
  key: string;
  client_ca?: string | undefined;
}

/** The files as grpc-js wants them, read now and on every reload. */
class FileCertificates implements CertificateProvider {
  readonly #files: TlsFiles;
  readonly #ca = new Set<CaCertificateUpdateListener>();
  readonly #identity = new Set<IdentityCertificateUpdateListener>();
  #latest: { certificate: Buffer; privateKey: Buffer; caCertificate?: Buffer } | undefined;

  constructor(files: TlsFiles) {
    this.#files = files;
  }

  async load(): Promise<void> {
    const [certificate, privateKey, caCertificate] = await Promise.all([
      readFile(this.#files.cert),
      readFile(this.#files.key),
      this.#files.client_ca ? readFile(this.#files.client_ca) : undefined,
    ]);
    // A key that does not match its certificate (a half-done renewal) fails here, and the
    // previous files stay in use, rather than failing every handshake after.
    createSecureContext({ cert: certificate, key: privateKey, ...(caCertificate ? { ca: caCertificate } : {}) });
    this.#latest = { certificate, privateKey, ...(caCertificate ? { caCertificate } : {}) };
    for (const listener of this.#identity) listener({ certificate, privateKey });
    if (caCertificate) for (const listener of this.#ca) listener({ caCertificate });
  }

  // The first files go to a new listener a microtask later: grpc-js 1.14 adds its own
  // watcher only after adding these listeners, and a synchronous first call would miss it
  // (the port would then drop every connection as having no certificate).
  addCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.#ca.add(listener);
    queueMicrotask(() => {
      if (this.#ca.has(listener) && this.#latest?.caCertificate) listener({ caCertificate: this.#latest.caCertificate });
    });
  }
  removeCaCertificateListener(listener: CaCertificateUpdateListener): void {
    this.#ca.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.#identity.add(listener);
    queueMicrotask(() => {
      if (this.#identity.has(listener) && this.#latest) listener({ certificate: this.#latest.certificate, privateKey: this.#latest.privateKey });
    });
  }
  removeIdentityCertificateListener(listener: IdentityCertificateUpdateListener): void {
    this.#identity.delete(listener);
  }
}

/** Replaces whatever the client sent as PEER_SUBJECT with the connection's certificate. */
const peerSubject: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, nextMetadata) => {
          metadata.remove(PEER_SUBJECT);
          const cn = call.getAuthContext().sslPeerCertificate?.subject?.CN;
          if (typeof cn === "string" && cn) metadata.set(PEER_SUBJECT, cn);
          nextMetadata(metadata);
        },
      }),
  });

export interface Tls {
  credentials: grpc.ServerCredentials;
  /** Reads the files again; new connections use them. */
  reload(): Promise<void>;
}

export async function tlsCredentials(files: TlsFiles): Promise<Tls> {
  const provider = new FileCertificates(files);
  await provider.load();
  // grpc-js 1.14 passes this function's arguments on to its credentials' constructor the
  // other way round from their names: identity first, then the CA (null: no client certificates).
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    files.client_ca ? provider : null,
    files.client_ca !== undefined,
  );
  return {
    credentials: grpc.experimental.createServerCredentialsWithInterceptors(credentials, [peerSubject]),
    reload: () => provider.load(),
  };
}
