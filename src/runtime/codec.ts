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

export function encode(value: unknown): Buffer {
  return packr.pack(value);
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
