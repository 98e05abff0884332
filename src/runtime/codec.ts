import { Packr } from "msgpackr";
import { FrameError } from "./errors.ts";

/**
 * The message codec: MessagePack through msgpackr. Records (msgpackr's shared-structure extension)
 * are off so that every frame decodes on its own, in any process, with no shared state.
 *
 * One thing is not carried: a map key named `__proto__`. msgpackr renames it on decode (to
 * `__proto_`) so that a forged frame cannot set the prototype of a decoded object. faultline's own
 * messages never use that key; an application payload must not either.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/**
 * msgpackr encodes into a slab and returns views of it, starting a new slab (of the last one's
 * size) when one is nearly full; it starts at 8 KiB and grows to fit a large value. 4 KiB messages
 * in its ~20 KiB slabs drove a mark-compact every ~100 ms in a round-trip loop (31 in 4 s, `--trace-gc`;
 * 1 with 64 KiB slabs, ~3 µs less CPU a round trip); a slab grown by one large value (a snapshot)
 * would make every later slab that large, so a small message kept in a queue would hold megabytes.
 * Slabs are therefore kept at SLAB_BYTES: a value larger than that gets a slab of its own size, and
 * the next value starts a fresh standard slab.
 */
const SLAB_BYTES = 64 * 1024;

export function encode(value: unknown): Buffer {
  const out = packr.pack(value);
  if (out.buffer.byteLength !== SLAB_BYTES) packr.useBuffer(Buffer.allocUnsafeSlow(SLAB_BYTES));
  return out;
}

/** Decode one MessagePack value; malformed input becomes a FrameError (reason "bad-payload"). */
export function decode(bytes: Uint8Array): unknown {
  try {
    return packr.unpack(bytes);
  } catch (e) {
    throw new FrameError("bad-payload", `payload is not valid MessagePack: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
