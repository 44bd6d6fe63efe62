/**
 * Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
 * Used on both ends of the pipe between the server and a plugin child.
 * @module
 */

/** @internal */
export class FrameTooLargeError extends Error {
  readonly size: number;
  readonly limit: number;
  constructor(size: number, limit: number) {
    super(`frame of ${size} bytes exceeds the limit of ${limit} bytes`);
    this.name = "FrameTooLargeError";
    this.size = size;
    this.limit = limit;
  }
}

/**
 * The 4-byte length that goes before a payload. Written as a header of its own, so
 * that a large payload (a MB tensor) is not copied once more just to be prefixed.
 * @internal
 */
export function frameHeader(payloadBytes: number): Uint8Array {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, payloadBytes);
  return header;
}

/** Header and payload in one buffer. @internal */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + payload.byteLength);
  frame.set(frameHeader(payload.byteLength));
  frame.set(payload, 4);
  return frame;
}

/**
 * A frame from a message's chunks (encode-chunks.ts), ready to write in order: the header
 * and runs of small chunks joined into one array each, large chunks as they are, so a
 * progress report is one write and a MB tensor is not copied to be framed.
 * @internal
 */
export function framedChunks(chunks: Uint8Array[]): Uint8Array[] {
  let size = 0;
  for (const c of chunks) size += c.byteLength;
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [frameHeader(size)];
  let runBytes = 4;
  const endRun = () => {
    if (run.length === 0) return;
    const joined = new Uint8Array(runBytes);
    let offset = 0;
    for (const c of run) {
      joined.set(c, offset);
      offset += c.byteLength;
    }
    out.push(joined);
    run = [];
    runBytes = 0;
  };
  for (const c of chunks) {
    if (c.byteLength >= LARGE_CHUNK) {
      endRun();
      out.push(c);
    } else {
      run.push(c);
      runBytes += c.byteLength;
    }
  }
  endRun();
  return out;
}

/** Chunks of at least this size are written by reference rather than joined. */
const LARGE_CHUNK = 16 * 1024;

/**
 * Splits a byte stream into frames. push() returns the complete frames so far and
 * throws FrameTooLargeError as soon as a header announces more than maxFrameBytes,
 * before buffering it.
 * @internal
 */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  readonly maxFrameBytes: number;

  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pending(): number {
    return this.#buffered;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    const frames: Uint8Array[] = [];
    for (;;) {
      if (this.#buffered < 4) break;
      const head = this.#peek(4);
      const size = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
      if (size > this.maxFrameBytes) throw new FrameTooLargeError(size, this.maxFrameBytes);
      if (this.#buffered < 4 + size) break;
      frames.push(this.#take(4 + size).subarray(4));
    }
    return frames;
  }

  #peek(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.byteLength >= n) return first;
    this.#join();
    return this.#chunks[0]!;
  }

  #take(n: number): Uint8Array {
    this.#join();
    const all = this.#chunks[0]!;
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#chunks = rest.byteLength > 0 ? [rest] : [];
    this.#buffered -= n;
    return out;
  }

  #join(): void {
    if (this.#chunks.length <= 1) return;
    const joined = new Uint8Array(this.#buffered);
    let offset = 0;
    for (const c of this.#chunks) {
      joined.set(c, offset);
      offset += c.byteLength;
    }
    this.#chunks = [joined];
  }
}
