/**
 * The abortable FIFO wait shared by the child-slot queue and the per-model locks:
 * the waiter joins `queue`; whoever serves the queue settles it; aborting the signal
 * first takes it out and rejects with the signal's reason. No listener outlives it.
 */
export interface Settle<T> {
  resolve(value: T): void;
  reject(reason: unknown): void;
}

export function waitInQueue<T, W extends Settle<T>>(queue: W[], signal: AbortSignal | undefined, fields: Omit<W, keyof Settle<T>>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      const i = queue.indexOf(waiter);
      if (i >= 0) queue.splice(i, 1);
      reject(signal?.reason);
    };
    const waiter = {
      ...fields,
      resolve: (value: T) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(value);
      },
      reject: (reason: unknown) => {
        signal?.removeEventListener("abort", onAbort);
        reject(reason);
      },
    } as W;
    signal?.addEventListener("abort", onAbort, { once: true });
    queue.push(waiter);
  });
}
