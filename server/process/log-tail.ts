/** The last `maxLines` lines of a byte stream, each cut at `maxLineLength` characters. */
export class LogTail {
  readonly maxLines: number;
  readonly maxLineLength: number;
  #lines: string[] = [];
  #partial = "";
  #decoder = new TextDecoder();

  constructor(maxLines: number, maxLineLength = 1000) {
    this.maxLines = maxLines;
    this.maxLineLength = maxLineLength;
  }

  push(chunk: Uint8Array): void {
    const text = this.#partial + this.#decoder.decode(chunk, { stream: true });
    const parts = text.split("\n");
    this.#partial = (parts.pop() ?? "").slice(-this.maxLineLength);
    for (const line of parts) this.#add(line);
  }

  /** Forgets what was kept: the next call's tail starts empty. */
  clear(): void {
    this.#lines = [];
    this.#partial = "";
  }

  lines(): string[] {
    return this.#partial ? [...this.#lines, this.#partial] : [...this.#lines];
  }

  #add(line: string): void {
    this.#lines.push(line.length > this.maxLineLength ? `${line.slice(0, this.maxLineLength)}…` : line);
    if (this.#lines.length > this.maxLines) this.#lines.splice(0, this.#lines.length - this.maxLines);
  }
}
