/**
 * Preloaded into a server process by startMeasuredProcess (server-process.ts), which runs it
 * with --expose-gc and an IPC channel: asked "heap", it collects all garbage and answers with
 * the bytes its heap and the buffers its objects hold then take. What the server keeps, and
 * only that: not the test process's garbage, nor the noise of a heap between collections.
 */
process.on("message", (message) => {
  if (message !== "heap") return;
  // Twice: the first collection's finalizers and weak callbacks free more for the second.
  globalThis.gc();
  globalThis.gc();
  const { heapUsed, external } = process.memoryUsage();
  process.send({ heapUsed, external });
});
// The channel keeps nothing running: the server still exits once it has stopped.
process.channel?.unref();
