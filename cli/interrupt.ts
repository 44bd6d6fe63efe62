/**
 * Ctrl-C during a create, fit or predict asks whether to cancel the action, from the
 * command's first moment: also before the server has answered with the action's id, when
 * a "y" cancels it as soon as the server has. "N" (or Enter) leaves it running and says how
 * to follow it again. Without a terminal to ask on, it leaves it running. Before the
 * request is sent, there is nothing to cancel: the command just ends.
 */
import { createInterface } from "node:readline/promises";
import type { ActionRun } from "../client/mod.ts";

/** The exit code of a command interrupted with its action left running. */
export const INTERRUPTED = 130;

export class CtrlC {
  #run: ActionRun<unknown> | undefined;
  #id: string | undefined;
  #first: number | undefined;
  #onAsk: () => void = () => {};
  /** Aborts a question still open when the action ends. */
  readonly #asking = new AbortController();
  /** Whether the question is on the terminal now. */
  #asked = false;
  readonly #handler = () => {
    this.#interrupted().catch((error: unknown) => {
      // A cancel the server refused, or a lost connection: said, not a crash.
      process.stderr.write(`plinth: could not cancel: ${(error as Error).message ?? String(error)}\n`);
      process.exit(INTERRUPTED);
    });
  };

  /** `what`: the call, as the question names it before the server has answered. */
  constructor(readonly what: string) {
    process.on("SIGINT", this.#handler);
  }

  /** The run, once its request is on its way. */
  sent(run: ActionRun<unknown>): void {
    this.#run = run;
    run.started.then(
      (action) => {
        this.#id = action.id;
      },
      () => {},
    );
  }

  /** What to do first when the question is asked (at once, when it is on the terminal now): stop drawing progress over it. */
  onAsk(stop: () => void): void {
    this.#onAsk = stop;
    if (this.#asked) stop();
  }

  /** The action has ended: Ctrl-C is the default again. */
  dispose(): void {
    process.off("SIGINT", this.#handler);
    this.#asking.abort();
  }

  async #interrupted(): Promise<void> {
    // Ctrl-C reaches npx and this process both, and npx passes it on: the same key press
    // twice within a second. A later one leaves without an answer.
    if (this.#first !== undefined) {
      if (performance.now() - this.#first > 1000) process.exit(INTERRUPTED);
      return;
    }
    this.#first = performance.now();
    this.#onAsk();
    const run = this.#run;
    if (!run) {
      process.stderr.write(`interrupted before the ${this.what} was sent: nothing to cancel\n`);
      process.exit(INTERRUPTED);
    }
    if (!process.stdin.isTTY) return this.#leave(run);
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const question =
      this.#id === undefined ? `Cancel the ${this.what} just sent (the server has not answered yet)? [y/N] ` : `Cancel action ${this.#id}? [y/N] `;
    this.#asked = true;
    const answer = await rl.question(question, { signal: this.#asking.signal }).catch(() => undefined);
    this.#asked = false;
    rl.close();
    if (answer === undefined) {
      // The action ended while asked (the command prints how), or Ctrl-C or Ctrl-D at the
      // question itself: that is no "yes".
      process.stderr.write("\n");
      if (this.#asking.signal.aborted) return;
      return this.#leave(run);
    }
    if (!/^y/i.test(answer.trim())) return this.#leave(run);
    // Cancelled once the server has answered; a request it refused has nothing to cancel
    // (the command reports the refusal).
    const started = await run.started.catch(() => undefined);
    if (!started) return;
    process.stderr.write(`cancelling ${started.id}…\n`);
    await run.cancel();
  }

  async #leave(run: ActionRun<unknown>): Promise<void> {
    const started = await run.started.catch(() => undefined);
    if (started) process.stderr.write(`left running: plinth wait ${started.id}\n`);
    process.exit(INTERRUPTED);
  }
}
