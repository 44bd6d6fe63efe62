/**
 * `npm run bench:turn-about -- --before REF [--rounds N] [--quick] bench:process bench:postgres …`:
 * runs each named benchmark on this checkout and on the code of REF (a commit before a
 * change), turn about — the order flips each round, so neither always runs first on a
 * machine that warms or tires — and prints each run's report under its version and round.
 * The benchmarks' own reports are the figures; this only runs them side by side.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { checkout } from "./checkout.ts";

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv[i + 1];
};
const before = option("--before");
const rounds = Number(option("--rounds") ?? 2);
const quick = argv.includes("--quick");
const benches = argv.filter((a, i) => a.startsWith("bench:") && argv[i - 1] !== "--before");
if (!before || benches.length === 0 || !Number.isInteger(rounds) || rounds < 1) {
  console.error("usage: npm run bench:turn-about -- --before REF [--rounds N] [--quick] bench:process [bench:postgres …]");
  process.exit(2);
}

const versions = [
  { name: "this checkout", dir: fileURLToPath(new URL("..", import.meta.url)) },
  { name: before, dir: checkout(before) },
];

for (const bench of benches) {
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? versions : [...versions].reverse();
    for (const { name, dir } of order) {
      console.log(`\n### ${bench} — ${name} — round ${round}/${rounds}`);
      const run = spawnSync("npm", ["run", "--silent", bench, ...(quick ? ["--", "--quick"] : [])], { cwd: dir, stdio: "inherit" });
      if (run.status !== 0) console.log(`(${bench} on ${name} exited with ${run.status ?? run.signal})`);
    }
  }
}
