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
      frames.push(this.#take(size));
    }
    return frames;
  }

  #peek(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.byteLength >= n) return first;
    this.#join();
    return this.#chunks[0]!;
  }

  /**
   * The next frame's payload: a view of the chunk it came in when it came in one, else
   * its bytes copied once into a buffer of its own (so a large frame is owned whole, and
   * its reader may keep or hand it over without another copy; see ownsBuffer).
   */
  #take(size: number): Uint8Array {
    this.#buffered -= 4 + size;
    const first = this.#chunks[0]!;
    if (first.byteLength >= 4 + size) {
      const rest = first.subarray(4 + size);
      if (rest.byteLength > 0) this.#chunks[0] = rest;
      else this.#chunks.shift();
      return first.subarray(4, 4 + size);
    }
    const out = new Uint8Array(size);
    let skip = 4;
    let offset = 0;
    let i = 0;
    while (offset < size || skip > 0) {
      const chunk = this.#chunks[i]!;
      const from = Math.min(skip, chunk.byteLength);
      skip -= from;
      const part = chunk.subarray(from, from + Math.min(size - offset, chunk.byteLength - from));
      out.set(part, offset);
      offset += part.byteLength;
      const used = from + part.byteLength;
      if (used < chunk.byteLength) this.#chunks[i] = chunk.subarray(used);
      else i++;
    }
    this.#chunks.splice(0, i);
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

/**
 * The view is the whole of its buffer, which nothing else uses (a frame FrameDecoder
 * copied out of several chunks): it may be handed to another thread as it is.
 * @internal
 */
export function ownsBuffer(view: Uint8Array): boolean {
  return view.byteOffset === 0 && view.byteLength === view.buffer.byteLength && view.buffer instanceof ArrayBuffer;
}
