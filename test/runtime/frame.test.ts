import { createCipheriv, createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decode, encode } from "../../src/runtime/codec.ts";
import { FrameError } from "../../src/runtime/errors.ts";
import {
  FRAME_OVERHEAD,
  FrameReader,
  FrameType,
  openFrame,
  sealBatch,
  sealFrame,
  splitBatch,
  verifyFrame,
} from "../../src/runtime/frame.ts";
import { MacKey } from "../../src/runtime/mac.ts";

const KEY = new MacKey(Buffer.alloc(32, 1));
const OTHER = new MacKey(Buffer.alloc(32, 2));
const bytes = fc.uint8Array({ maxLength: 2048 });

function reason(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(FrameError);
    return (e as FrameError).reason;
  }
}

describe("frame", () => {
  it("seal/open round-trips any payload", () => {
    fc.assert(
      fc.property(bytes, fc.integer({ min: 0, max: 2 ** 40 }), (payload, seq) => {
        const f = sealFrame(FrameType.Datagram, payload, KEY, seq);
        expect(f.length).toBe(payload.length + FRAME_OVERHEAD);
        const out = openFrame(f, KEY, 1 << 20, seq);
        expect(out.type).toBe(FrameType.Datagram);
        expect(Buffer.compare(out.payload, Buffer.from(payload))).toBe(0);
      }),
    );
  });

  it("detects every single-bit flip anywhere in the frame", () => {
    fc.assert(
      fc.property(bytes, fc.nat(), (payload, at) => {
        const f = sealFrame(FrameType.Datagram, payload, KEY);
        const bit = at % (f.length * 8);
        f[bit >> 3]! ^= 1 << (bit & 7);
        expect(reason(() => openFrame(f, KEY))).toBeDefined();
      }),
    );
  });

  it("rejects a wrong key, a wrong sequence number (replay), and truncation", () => {
    fc.assert(
      fc.property(bytes, fc.nat({ max: 1000 }), (payload, cut) => {
        const f = sealFrame(FrameType.Datagram, payload, KEY, 5);
        expect(reason(() => openFrame(f, OTHER, 1 << 20, 5))).toBe("bad-mac");
        expect(reason(() => openFrame(f, KEY, 1 << 20, 4))).toBe("bad-mac");
        const short = f.subarray(0, Math.min(cut, f.length - 1));
        expect(reason(() => openFrame(short, KEY))).toMatch(
          /truncated|bad-magic|bad-version|bad-type|oversized/,
        );
      }),
    );
  });

  it("names what is wrong with a header", () => {
    const f = sealFrame(FrameType.Datagram, Buffer.from("hi"), KEY);
    const badMagic = Buffer.from(f);
    badMagic[0] = 0;
    expect(reason(() => openFrame(badMagic, KEY))).toBe("bad-magic");
    const badVersion = Buffer.from(f);
    badVersion[2] = 9;
    expect(reason(() => openFrame(badVersion, KEY))).toBe("bad-version");
    const badType = Buffer.from(f);
    badType[3] = 77;
    expect(reason(() => openFrame(badType, KEY))).toBe("bad-type");
    expect(reason(() => openFrame(sealFrame(FrameType.Datagram, Buffer.alloc(100), KEY), KEY, 99))).toBe(
      "oversized",
    );
  });

  it("FrameReader yields the same frames however the stream is chunked", () => {
    fc.assert(
      fc.property(
        fc.array(bytes, { maxLength: 10 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }),
        (payloads, cuts) => {
          const frames = payloads.map((p, i) => sealFrame(FrameType.Data, p, KEY, i));
          const stream = Buffer.concat(frames);
          const r = new FrameReader(1 << 20);
          const out: Buffer[] = [];
          let off = 0;
          let i = 0;
          while (off < stream.length) {
            const n = cuts[i++ % cuts.length]!;
            r.push(stream.subarray(off, off + n));
            off += n;
            for (let f = r.next(); f; f = r.next()) out.push(Buffer.from(f));
          }
          expect(out.length).toBe(frames.length);
          out.forEach((f, k) => {
            expect(verifyFrame(f, KEY, k)).toBe(true);
          });
          expect(r.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it("FrameReader rejects a hostile length from the header alone, before buffering the payload", () => {
    const r = new FrameReader(1024);
    const head = Buffer.from([0x46, 0x4c, 1, FrameType.Data, 0xff, 0xff, 0xff, 0xff]);
    r.push(head);
    expect(reason(() => r.next())).toBe("oversized");
  });

  it("batches round-trip and a damaged batch is rejected", () => {
    fc.assert(
      fc.property(fc.array(bytes, { maxLength: 20 }), (msgs) => {
        const f = sealBatch(
          msgs.map((m) => Buffer.from(m)),
          KEY,
          3,
        );
        expect(verifyFrame(f, KEY, 3)).toBe(true);
        const parts = splitBatch(f.subarray(8, f.length - 16));
        expect(parts.map((p) => [...p])).toEqual(msgs.map((m) => [...m]));
      }),
    );
    expect(reason(() => splitBatch(Buffer.from([0, 0, 0, 9, 1])))).toBe("bad-payload");
    expect(reason(() => splitBatch(Buffer.from([0, 0])))).toBe("bad-payload");
  });
});

describe("codec", () => {
  it("round-trips MessagePack values", () => {
    // A key named __proto__ is the one thing not carried (see the next test).
    const values = fc.jsonValue().filter((v) => !JSON.stringify(v).includes('"__proto__"'));
    fc.assert(
      fc.property(values, (v) => {
        expect(decode(encode(v))).toEqual(JSON.parse(JSON.stringify(v)));
      }),
    );
  });

  it("a forged __proto__ key cannot reach an object's prototype", () => {
    const forged = encode(JSON.parse('[{"__proto__": {"polluted": 1}, "a": 1}]'));
    const [out] = decode(forged) as [Record<string, unknown>];
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.hasOwn(out, "__proto__")).toBe(false);
    expect(out.a).toBe(1);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("garbage either decodes to some value or fails as a FrameError, never anything else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (junk) => {
        try {
          decode(junk);
        } catch (e) {
          expect(e).toBeInstanceOf(FrameError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("MacKey", () => {
  const secret = Buffer.alloc(32, 9);
  it("frames under a connection key (Poly1305, then GMAC): round trip, tamper, replay", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 16 * 1024, max: 70_000 })),
        fc.nat(),
        fc.nat(),
        (size, seq, at) => {
          const a = new MacKey(secret, { uniqueSeq: true });
          const b = new MacKey(secret, { uniqueSeq: true });
          const f = sealFrame(FrameType.Data, Buffer.alloc(size, 1), a, seq);
          expect(verifyFrame(f, b, seq)).toBe(true);
          expect(verifyFrame(f, b, seq + 1)).toBe(false);
          // The static kind of key (HELLO, datagrams) never uses the nonce-based MACs.
          expect(verifyFrame(f, new MacKey(secret), seq)).toBe(false);
          const bit = at % (f.length * 8);
          f[bit >> 3]! ^= 1 << (bit & 7);
          expect(verifyFrame(f, b, seq)).toBe(false);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("the Poly1305 tag is RFC 8439 ChaCha20-Poly1305 over the frame as associated data", () => {
    // Checked against OpenSSL's implementation through node:crypto: same derived key, same nonce.
    const polyKey = createHmac("sha256", secret).update("faultline/v1/mac/chacha20poly1305").digest();
    for (const [size, seq] of [
      [0, 0],
      [100, 7],
      [4096, 2 ** 40 + 3],
    ] as const) {
      const f = sealFrame(
        FrameType.Data,
        Buffer.alloc(size, 5),
        new MacKey(secret, { uniqueSeq: true }),
        seq,
      );
      const nonce = Buffer.alloc(12);
      nonce.writeUInt32BE(Math.floor(seq / 2 ** 32), 4);
      nonce.writeUInt32BE(seq >>> 0, 8);
      const c = createCipheriv("chacha20-poly1305", polyKey, nonce, { authTagLength: 16 });
      c.setAAD(f.subarray(0, f.length - 16), { plaintextLength: 0 });
      c.final();
      expect(c.getAuthTag().equals(f.subarray(f.length - 16))).toBe(true);
    }
  });

  it("refuses a key shorter than 16 bytes", () => {
    expect(() => new MacKey(Buffer.alloc(8))).toThrow(/16 bytes/);
  });
});
