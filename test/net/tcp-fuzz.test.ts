import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newNonce } from "../../src/net/tcp-handshake.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { encode } from "../../src/runtime/codec.ts";
import { FRAME_VERSION, FrameType, headerCheck, sealFrame } from "../../src/runtime/frame.ts";
import { MacKey } from "../../src/runtime/mac.ts";
import { waitFor } from "../fixtures/processes.ts";

const KEY = randomBytes(32);
/** A well-formed header (its check byte right), so the length, type or version is what is hostile. */
const header = (type: number, len: number, version = FRAME_VERSION) => {
  const h = Buffer.alloc(8);
  h[0] = 0x46;
  h[1] = 0x4c;
  h[2] = version;
  h[3] = type;
  h[5] = (len >>> 16) & 0xff;
  h[6] = (len >>> 8) & 0xff;
  h[7] = len & 0xff;
  h[4] = headerCheck(h);
  return h;
};
const hello = (fields: Record<string, unknown>, key: Uint8Array = KEY) =>
  sealFrame(
    FrameType.Hello,
    encode({ v: 1, from: "x", to: "target", boot: "b", nonce: newNonce(), ...fields }),
    new MacKey(key),
  );

/** Hostile inputs: random bytes, truncated and oversized frames, forged and malformed handshakes. */
const hostile: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  fc
    .tuple(
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ maxLength: 200 }),
      fc.nat(),
    )
    .map(([v, t, p, cut]) => {
      const full = Buffer.concat([header(t, p.length, v), Buffer.from(p), randomBytes(16)]);
      return full.subarray(0, cut % (full.length + 1)); // truncated anywhere
    }),
  fc
    .integer({ min: 4097, max: 2 ** 24 - 1 })
    .map((len) => Buffer.concat([header(FrameType.Hello, len), randomBytes(64)])),
  fc.integer({ min: 1, max: 3 }).map((t) => Buffer.concat([header(t, 2 ** 24 - 1), randomBytes(8)])), // oversized
  fc.constant(0).map(() => hello({}, randomBytes(32))), // forged: wrong key
  fc
    .oneof(
      fc.constant({ to: "someone-else" }),
      fc.constant({ v: 99 }),
      fc.constant({ nonce: Buffer.alloc(3) }),
      fc.constant({ from: 42 }),
      fc.constant({ addr: "nowhere" }),
      fc.constant({ from: "target" }),
    )
    .map((f) => hello(f)), // authenticated but malformed handshakes
  fc.uint8Array({ maxLength: 100 }).map((p) => sealFrame(FrameType.Hello, p, new MacKey(KEY))), // authenticated garbage payload
  fc.uint8Array({ maxLength: 200 }).map((p) => Buffer.concat([hello({}), Buffer.from(p)])), // good HELLO, then junk
);

function throwAt(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port }, () => {
      s.end(bytes);
    });
    s.on("error", () => {});
    s.on("close", () => resolve());
    s.resume();
    s.setTimeout(5000, () => s.destroy());
  });
}

describe("TCP listener under hostile input", () => {
  let target: TcpTransport;
  beforeAll(async () => {
    target = new TcpTransport({ id: "target", clusterKey: KEY, handshakeTimeoutMs: 500 });
    await target.start();
  });
  afterAll(async () => {
    await target.stop();
  });

  it("10,000 random, truncated, oversized and forged frames: no crash, no leaked socket, bounded memory", async () => {
    const inputs = fc.sample(hostile, { numRuns: 10_000, seed: 20261122 });
    const heap0 = process.memoryUsage().heapUsed;
    let next = 0;
    const worker = async () => {
      while (next < inputs.length) await throwAt(target.port(), inputs[next++]!);
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    await waitFor(() => target.stats().openConnections === 0, "every hostile socket to be closed", 15_000);
    const st = target.stats();
    const rejected = Object.values(st.badFrames).reduce((s, n) => s + n, 0);
    expect(rejected).toBeGreaterThan(5000);
    expect(st.received).toBe(0);
    (globalThis as { gc?: () => void }).gc?.();
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(64 * 1024 * 1024);

    // The listener still serves real peers.
    const friend = new TcpTransport({ id: "friend", clusterKey: KEY });
    await friend.start();
    try {
      const got: unknown[] = [];
      target.on("message", (_f, m) => got.push(m));
      friend.addPeer("target", target.address());
      friend.send("target", "still alive?");
      await waitFor(() => got.length === 1, "a real message after the barrage");
    } finally {
      await friend.stop();
    }
  });
});
