import { FrameError } from "./errors.ts";
import { MAC_BYTES, type MacKey } from "./mac.ts";

/**
 * The frame every faultline byte travels in:
 *
 *   0      2        3       4       5              8                8+len
 *   +------+--------+-------+-------+--------------+----------------+---------+
 *   | "FL" | version| type  | check | len (u24 BE) | payload (len)  | mac (16)|
 *   +------+--------+-------+-------+--------------+----------------+---------+
 *
 * mac = MacKey.tag(seq, header || payload) (see mac.ts), 16 bytes. `seq` is implicit: a
 * stream connection counts frames per direction, so a replayed, dropped or reordered frame fails
 * its MAC; datagrams use seq 0. The key is the cluster key or a per-connection key derived from it.
 *
 * check = CRC-8 (polynomial 0x07) of the other seven header bytes. The MAC cannot be checked before
 * the whole frame is in, and a length damaged on the way would have the reader wait for bytes that
 * never come (a flipped bit in the length's middle byte: up to 4 MiB), the connection silently stuck
 * while the other direction works. The check catches every error of up to three bits in the header,
 * so a damaged length fails at once, as corruption. (Version 1 had no check and a u32 length.)
 */
export const FRAME_MAGIC_0 = 0x46; // 'F'
export const FRAME_MAGIC_1 = 0x4c; // 'L'
export const FRAME_VERSION = 2;
export const FRAME_HEADER_BYTES = 8;
export const FRAME_MAC_BYTES = MAC_BYTES;
export const FRAME_OVERHEAD = FRAME_HEADER_BYTES + FRAME_MAC_BYTES;
/** Default largest payload accepted (bytes). */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** The largest payload the 24-bit length can carry (bytes). */
export const MAX_FRAME_PAYLOAD = 2 ** 24 - 1;

export const FrameType = {
  /** Connection handshake, authenticated with the cluster key. */
  Hello: 1,
  /** A batch of messages on an established stream connection. */
  Data: 2,
  /** A single self-contained message (simulated network, datagrams). */
  Datagram: 3,
  /**
   * The sender's last frame on a connection: a frame it received failed its check, so it closes
   * the connection, and says why (payload: the reason, UTF-8) under its session key. Its peer thus
   * learns that its own frames arrive damaged, evidence only the receiving side could see.
   */
  Close: 4,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export interface Frame {
  type: FrameType;
  payload: Buffer;
}

/** CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial value 0: a byte a table lookup. */
const CRC8 = (() => {
  const t = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let b = 0; b < 8; b++) c = c & 0x80 ? ((c << 1) ^ 0x07) & 0xff : (c << 1) & 0xff;
    t[i] = c;
  }
  return t;
})();

export function crc8(bytes: Uint8Array, start = 0, end = bytes.length, init = 0): number {
  let c = init;
  for (let i = start; i < end; i++) c = CRC8[c ^ bytes[i]!]!;
  return c;
}

/** The check byte of the header in h[0..8): CRC-8 of bytes 0-3 and 5-7. */
export function headerCheck(h: Uint8Array): number {
  return crc8(h, 5, 8, crc8(h, 0, 4));
}

/** Write a frame header at the start of `out`. */
export function writeHeader(out: Buffer, type: FrameType, length: number): void {
  if (length > MAX_FRAME_PAYLOAD) {
    throw new FrameError(
      "oversized",
      `a frame payload of ${length} bytes exceeds the format's ${MAX_FRAME_PAYLOAD}`,
    );
  }
  out[0] = FRAME_MAGIC_0;
  out[1] = FRAME_MAGIC_1;
  out[2] = FRAME_VERSION;
  out[3] = type;
  out[5] = length >>> 16;
  out[6] = (length >>> 8) & 0xff;
  out[7] = length & 0xff;
  out[4] = headerCheck(out);
}

/** Seal `payload` into a complete frame. */
export function sealFrame(type: FrameType, payload: Uint8Array, key: MacKey, seq = 0): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length + FRAME_MAC_BYTES);
  writeHeader(out, type, payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  const bodyEnd = FRAME_HEADER_BYTES + payload.length;
  key.sign(seq, out, bodyEnd, out, bodyEnd);
  return out;
}

/** Check a header; returns the payload length. Throws FrameError on anything unexpected. */
export function checkHeader(h: Uint8Array, maxPayload: number): { type: FrameType; length: number } {
  if (h[0] !== FRAME_MAGIC_0 || h[1] !== FRAME_MAGIC_1) {
    throw new FrameError(
      "bad-magic",
      "not a faultline frame (bad magic bytes): is something else talking to this port?",
    );
  }
  if (h[2] !== FRAME_VERSION) {
    throw new FrameError(
      "bad-version",
      `frame version ${h[2]} is not supported (this node speaks version ${FRAME_VERSION}): upgrade the older node`,
    );
  }
  if (h[4] !== headerCheck(h)) {
    throw new FrameError("bad-check", "frame header failed its check (damaged on the way)");
  }
  const type = h[3]!;
  if (!KNOWN_TYPES.has(type)) throw new FrameError("bad-type", `unknown frame type ${type}`);
  const length = (h[5]! << 16) | (h[6]! << 8) | h[7]!;
  if (length > maxPayload) {
    throw new FrameError("oversized", `frame payload of ${length} bytes exceeds the limit of ${maxPayload}`);
  }
  return { type: type as FrameType, length };
}

/** Verify a complete frame's MAC; `frame` must be exactly one frame. */
export function verifyFrame(frame: Uint8Array, key: MacKey, seq = 0): boolean {
  if (frame.length < FRAME_OVERHEAD) return false;
  const bodyEnd = frame.length - FRAME_MAC_BYTES;
  return key.check(seq, frame, bodyEnd);
}

/** Parse and authenticate one whole frame (a datagram). Throws FrameError. */
export function openFrame(
  bytes: Uint8Array,
  key: MacKey,
  maxPayload = DEFAULT_MAX_FRAME_BYTES,
  seq = 0,
): Frame {
  if (bytes.length < FRAME_OVERHEAD)
    throw new FrameError("truncated", `frame of ${bytes.length} bytes is too short`);
  const { type, length } = checkHeader(bytes, maxPayload);
  if (bytes.length !== FRAME_OVERHEAD + length) {
    throw new FrameError(
      bytes.length < FRAME_OVERHEAD + length ? "truncated" : "bad-payload",
      `frame declares ${length} payload bytes but carries ${bytes.length - FRAME_OVERHEAD}`,
    );
  }
  if (!verifyFrame(bytes, key, seq)) {
    throw new FrameError(
      "bad-mac",
      "frame failed its integrity check (corrupted, forged, replayed, or a different cluster key)",
    );
  }
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return { type, payload: buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length) };
}

/**
 * Splits a byte stream into frames without trusting it: the header is checked (magic, version,
 * check byte, type, length limit) before any payload is buffered, so a hostile length cannot make
 * us allocate. Authentication is the caller's (it knows the key and the sequence number).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need: number | undefined;

  constructor(private maxPayload: number) {}

  /** Lower or raise the payload limit (e.g. small before the handshake, larger after). */
  setMaxPayload(n: number): void {
    this.maxPayload = n;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete raw frame, or undefined if more bytes are needed. Throws FrameError. */
  next(): Buffer | undefined {
    if (this.need === undefined) {
      if (this.buffered < FRAME_HEADER_BYTES) return undefined;
      const head = this.peek(FRAME_HEADER_BYTES);
      const { length } = checkHeader(head, this.maxPayload);
      this.need = FRAME_OVERHEAD + length;
    }
    if (this.buffered < this.need) return undefined;
    const frame = this.take(this.need);
    this.need = undefined;
    return frame;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (off === n) break;
    }
    return out;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    // The frame spans chunks: copy exactly its bytes; the rest of the last chunk stays a view.
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const want = n - off;
      if (c.length <= want) {
        c.copy(out, off);
        off += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, off, 0, want);
        this.chunks[0] = c.subarray(want);
        off += want;
      }
    }
    return out;
  }
}

/** Bytes a Data frame carrying `messages` takes. */
export function batchFrameBytes(messages: readonly Buffer[]): number {
  let n = FRAME_OVERHEAD;
  for (const m of messages) n += 4 + m.length;
  return n;
}

/**
 * Seal several encoded messages into one Data frame: payload = (u32 BE length, bytes)*. One MAC and
 * one socket write cover the whole batch, which is how the stream transport amortises its costs.
 * The frame is written at the start of `into` when it is large enough (a connection passes memory
 * the socket has finished with: see TcpConnection.sendBatch), else into a new buffer.
 */
export function sealBatch(messages: readonly Buffer[], key: MacKey, seq: number, into?: Buffer): Buffer {
  const n = batchFrameBytes(messages);
  const payloadLen = n - FRAME_OVERHEAD;
  const out = into && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
  writeHeader(out, FrameType.Data, payloadLen);
  let off = FRAME_HEADER_BYTES;
  for (const m of messages) {
    out.writeUInt32BE(m.length, off);
    m.copy(out, off + 4);
    off += 4 + m.length;
  }
  key.sign(seq, out, off, out, off);
  return out;
}

/** Split a Data frame's payload into its messages. Throws FrameError if the lengths do not add up. */
export function splitBatch(payload: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < payload.length) {
    if (off + 4 > payload.length) throw new FrameError("bad-payload", "batch entry header is truncated");
    const len = payload.readUInt32BE(off);
    if (off + 4 + len > payload.length) throw new FrameError("bad-payload", "batch entry overruns the frame");
    out.push(payload.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}
