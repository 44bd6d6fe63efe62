// Plain JavaScript so that it runs in a worker thread under any loader (tsx, vitest).
// Checkpoints the WAL of the database at workerData.path every workerData.periodMs,
// on its own connection: the fsync of a checkpoint stalls this thread, not the
// server's event loop. PASSIVE never blocks the server's writes.
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

const db = new Database(workerData.path);
db.pragma("busy_timeout = 1000");
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch (error) {
    parentPort?.postMessage({ error: String(error) });
  }
}, workerData.periodMs);
parentPort?.on("message", (message) => {
  if (message === "close") {
    clearInterval(timer);
    try {
      db.pragma("wal_checkpoint(TRUNCATE)");
    } finally {
      db.close();
      parentPort?.close();
    }
  }
});
