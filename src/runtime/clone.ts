/**
 * A deep copy for stores that keep values in memory (the memory durable store, the simulator's
 * disk): `structuredClone`, except that a byte array is copied as the bytes it shows. A
 * structuredClone of a view copies the whole buffer under it — a 1 MiB chunk of a 20 MB snapshot
 * cost a 20 MB copy per chunk, and 100,000 writes into a memory-durability member crawled at a
 * few hundred a second while its snapshot was stored.
 */
export function copyValue<T>(v: T): T {
  if (v instanceof Uint8Array) return Uint8Array.prototype.slice.call(v) as T;
  return structuredClone(v);
}
