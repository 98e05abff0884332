import { createCipheriv, createHmac, hash } from "node:crypto";
import sodium from "sodium-native";
import { poly1305 } from "./poly1305.ts";

/** Bytes of MAC carried by every frame. */
export const MAC_BYTES = 16;
/** Frames at least this large use GMAC rather than Poly1305 under a connection key (see MacKey). */
export const GMAC_MIN_BYTES = 16 * 1024;

/** Poly1305 keys made by one ChaCha20 keystream call (32 bytes each). */
const POLY_KEYS_PER_BLOCK = 64;
/** Bytes ahead of the body in the keyed SHA-256 input: k1 (32) and the sequence number (8). */
const PREFIX = 32 + 8;

interface NonceKeys {
  /** Key of the ChaCha20 keystream the Poly1305 one-time keys come from. */
  chacha: Buffer;
  gcm: Buffer;
  /** The keystream of one block of sequence numbers: 64 Poly1305 keys... */
  stream: Buffer;
  /** ...and each as a 32-byte view of it (made once: no view a frame). */
  polyKeys: Buffer[];
}

/**
 * The frame MAC. Three constructions, chosen by what is cheapest for the frame at hand; both ends
 * make the same choice from the key's kind and the frame's length:
 *
 * - **Keyed SHA-256**: SHA-256(k1 || seq (u64 BE) || body), truncated to 16 bytes. Used for every
 *   frame under a key whose sequence numbers may repeat (HELLO, datagrams, the simulator).
 *   Why not HMAC: HMAC-SHA256 through node:crypto costs ~4.5 µs per small frame (object set-up
 *   dominates); one-shot `crypto.hash` over a prefixed buffer costs ~0.3–2 µs. Secret-prefix
 *   SHA-256 is unsafe in general because of length extension, but this MAC input is prefix-free: a
 *   fixed-length key, a fixed-length sequence number, and a header whose length field fixes how
 *   many payload bytes follow — no valid input extends another. A Merkle–Damgård hash keyed
 *   through its prefix is a PRF on prefix-free inputs when its compression function is one
 *   (Bellare, Canetti, Krawczyk: "Pseudorandom functions revisited: the cascade construction",
 *   FOCS 1996).
 * - **Poly1305 under one-time keys from a ChaCha20 keystream** for frames under GMAC_MIN_BYTES
 *   under a connection key, whose sequence numbers never repeat. Frame `seq` takes the 32 bytes at
 *   offset 32·(seq mod 64) of the ChaCha20 (RFC 8439) keystream for nonce 0^32 || ⌊seq/64⌋ (u64 BE),
 *   counter from 0, as its Poly1305 key, and its tag is Poly1305 of the frame body. This is the
 *   Wegman–Carter construction ChaCha20-Poly1305 and NaCl's secretbox use (a one-time Poly1305 key
 *   taken from a stream cipher's keystream), minus the AEAD's padding and lengths, which a frame
 *   does not need: its header fixes its length. Keystream blocks never repeat because sequence
 *   numbers do not, so no Poly1305 key is used twice. One keystream call makes 64 keys (~1 µs), so
 *   a frame costs one Poly1305 pass. node:crypto exposes no bare Poly1305 (its AEADs are objects
 *   made per message, ~3 µs each before the first byte), so the pass is OpenSSL's through a small
 *   addon (native/poly1305.c, see poly1305.ts): 0.13 µs at 64 B and ~0.5 µs at 4 KiB; where the
 *   addon is not built, libsodium's (sodium-native), 0.19 and 1.1–2.3 µs — the same tags.
 * - **GMAC** (AES-256-GCM, empty plaintext, the body as AAD, IV = 0^32 || seq): from
 *   GMAC_MIN_BYTES under a connection key. AES-NI/VAES make it the fastest per byte (125 µs a MiB
 *   against 240 for Poly1305); the per-call object costs ~2.5 µs, repaid from ~16 KiB.
 *
 * Each construction's key is derived from the given key with HMAC under its own label, so no key
 * is used by two primitives.
 */
export class MacKey {
  /** Keyed SHA-256: k1 || seq || body is assembled here (keys whose sequence numbers may repeat). */
  private scratch: Buffer | undefined;
  /** The nonce-based MACs' keys (a connection's directional key). */
  private readonly nonceKeys: NonceKeys | undefined;
  /** Which block of sequence numbers `nonceKeys.stream` holds the Poly1305 keys of. */
  private polyBlock = -1;
  private readonly iv = Buffer.alloc(12);
  private readonly tag = Buffer.alloc(MAC_BYTES);

  /**
   * @param key at least 16 bytes of secret.
   * @param options.uniqueSeq the caller never MACs two frames with one sequence number under this
   *   key (a connection's directional key); enables the nonce-based MACs (Poly1305, GMAC).
   */
  constructor(key: Uint8Array, options: { uniqueSeq?: boolean } = {}) {
    if (key.length < 16) throw new RangeError("a MAC key needs at least 16 bytes");
    const derive = (label: string) => createHmac("sha256", key).update(`faultline/v1/mac/${label}`).digest();
    if (options.uniqueSeq) {
      const stream = Buffer.allocUnsafeSlow(POLY_KEYS_PER_BLOCK * 32); // not pooled: it holds keys
      this.nonceKeys = {
        chacha: derive("poly1305-keystream"),
        gcm: derive("gmac"),
        stream,
        polyKeys: Array.from({ length: POLY_KEYS_PER_BLOCK }, (_, i) => stream.subarray(32 * i, 32 * i + 32)),
      };
      return;
    }
    const k1 = derive("sha256");
    this.scratch = Buffer.allocUnsafeSlow(PREFIX + 256); // not from the shared pool: it holds a key
    k1.copy(this.scratch, 0);
    k1.fill(0);
  }

  /** Write the 16-byte tag of `src[0, end)` at sequence number `seq` into `out` at `at`. */
  sign(seq: number, src: Buffer, end: number, out: Buffer, at: number): void {
    this.digest(seq, src, end).copy(out, at, 0, MAC_BYTES);
  }

  /** Whether `frame[end, end + 16)` is the tag of `frame[0, end)` at `seq` (constant time). */
  check(seq: number, frame: Uint8Array, end: number): boolean {
    if (frame.length < end + MAC_BYTES) return false;
    const d = this.digest(seq, frame, end);
    let diff = 0;
    for (let i = 0; i < MAC_BYTES; i++) diff |= d[i]! ^ frame[end + i]!;
    return diff === 0;
  }

  private digest(seq: number, src: Uint8Array, end: number): Buffer {
    if (this.nonceKeys && end < GMAC_MIN_BYTES) return this.polyTag(this.nonceKeys, seq, src, end);
    const body = end === src.length ? src : src.subarray(0, end);
    return this.nonceKeys ? this.gmacTag(this.nonceKeys, seq, body) : this.shaTag(seq, body);
  }

  private polyTag(keys: NonceKeys, seq: number, src: Uint8Array, end: number): Buffer {
    const block = Math.floor(seq / POLY_KEYS_PER_BLOCK);
    if (block !== this.polyBlock) {
      this.setIv(block);
      sodium.crypto_stream_chacha20_ietf(keys.stream, this.iv, keys.chacha);
      this.polyBlock = block;
    }
    const data = Buffer.isBuffer(src) ? src : Buffer.from(src.buffer, src.byteOffset, src.length);
    poly1305(this.tag, keys.polyKeys[seq - block * POLY_KEYS_PER_BLOCK]!, data, end);
    return this.tag;
  }

  private gmacTag(keys: NonceKeys, seq: number, body: Uint8Array): Buffer {
    this.setIv(seq);
    const c = createCipheriv("aes-256-gcm", keys.gcm, this.iv, { authTagLength: MAC_BYTES });
    c.setAAD(body);
    c.final();
    return c.getAuthTag();
  }

  /** iv = 0^32 || n (u64 BE). */
  private setIv(n: number): void {
    this.iv.writeUInt32BE(Math.floor(n / 4294967296) >>> 0, 4);
    this.iv.writeUInt32BE(n >>> 0, 8);
  }

  private shaTag(seq: number, body: Uint8Array): Buffer {
    const need = PREFIX + body.length;
    let s = this.scratch!;
    if (need > s.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(need, s.length * 2));
      s.copy(grown, 0, 0, PREFIX - 8);
      s.fill(0);
      s = this.scratch = grown;
    }
    s.writeUInt32BE(Math.floor(seq / 4294967296) >>> 0, PREFIX - 8);
    s.writeUInt32BE(seq >>> 0, PREFIX - 4);
    s.set(body, PREFIX);
    return hash("sha256", s.subarray(0, need), "buffer") as Buffer;
  }
}
