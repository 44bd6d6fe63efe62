/**
 * Ids that sort in creation order (a time part, then a counter), so stores can page
 * by id, with a random tail so that ids from different server runs never collide.
 */
let last = 0;
let seq = 0;

export function newId(prefix: string): string {
  const now = Date.now();
  seq = now === last ? seq + 1 : 0;
  last = now;
  const random = crypto.getRandomValues(new Uint8Array(4));
  const tail = [...random].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${prefix}-${now.toString(36).padStart(9, "0")}${seq.toString(36).padStart(3, "0")}${tail}`;
}
