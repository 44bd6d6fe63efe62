/**
 * The 55 kB JSON batch the benchmarks send (payloads, security, peer): 5,000 numbers
 * with five decimals, 53 kB of JSON text, 55 kB as a google.protobuf.Value.
 */
export const batch = Array.from({ length: 5000 }, (_, i) => Math.round((((i * 7919) % 100_003) / 100_003 + i) * 1e5) / 1e5);
export const batchText = JSON.stringify(batch);
