import { createCipheriv, createHmac } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decode, encode } from "../../src/runtime/codec.ts";
import { FrameError } from "../../src/runtime/errors.ts";
import {
  checkHeader,
  crc8,
  FRAME_OVERHEAD,
  FrameReader,
  FrameType,
  headerCheck,
  MAX_FRAME_PAYLOAD,
  openFrame,
  sealBatch,
  sealFrame,
  splitBatch,
  verifyFrame,
  writeHeader,
} from "../../src/runtime/frame.ts";
import { MacKey } from "../../src/runtime/mac.ts";
import {
  addonPaths,
  poly1305 as fastPoly1305,
  loadPoly1305,
  passesTestVector,
  poly1305Impl,
  poly1305Sodium,
} from "../../src/runtime/poly1305.ts";

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
    badType[4] = headerCheck(badType);
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
    const head = Buffer.alloc(8);
    writeHeader(head, FrameType.Data, MAX_FRAME_PAYLOAD);
    r.push(head);
    expect(reason(() => r.next())).toBe("oversized");
  });

  it("the header check is CRC-8 (poly 0x07): its standard check value", () => {
    expect(crc8(Buffer.from("123456789"))).toBe(0xf4);
  });

  it("a header damaged in one, two or three bits fails at once, before any payload is waited for", () => {
    // A damaged length would otherwise have the reader wait for bytes that never come.
    fc.assert(
      fc.property(
        fc.constantFrom(FrameType.Hello, FrameType.Data, FrameType.Datagram, FrameType.Close),
        fc.integer({ min: 0, max: MAX_FRAME_PAYLOAD }),
        fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 3 }),
        (type, length, bits) => {
          const head = Buffer.alloc(8);
          writeHeader(head, type, length);
          expect(checkHeader(head, MAX_FRAME_PAYLOAD)).toEqual({ type, length });
          for (const b of bits) head[b >> 3]! ^= 1 << (b & 7);
          const r = new FrameReader(MAX_FRAME_PAYLOAD);
          r.push(head);
          expect(reason(() => r.next())).toMatch(/^(bad-magic|bad-version|bad-check)$/);
        },
      ),
      { numRuns: 2000 },
    );
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

describe("sealBatch into given memory", () => {
  it("gives the same frame as fresh memory, whatever the memory held before, and uses it only if it fits", () => {
    const key = new MacKey(Buffer.alloc(32, 4), { uniqueSeq: true });
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 }),
        fc.integer({ min: -40, max: 400 }),
        fc.nat({ max: 255 }),
        fc.nat({ max: 1000 }),
        (msgs, extra, junk, seq) => {
          const messages = msgs.map((m) => Buffer.from(m));
          const want = sealBatch(messages, key, seq);
          const into = Buffer.alloc(Math.max(0, want.length + extra), junk);
          const got = sealBatch(messages, key, seq, into);
          expect(got.equals(want)).toBe(true);
          expect(got.buffer === into.buffer).toBe(into.length >= want.length);
        },
      ),
      { numRuns: 300 },
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

  it("one key signing sequence numbers in any order tags as a fresh key does (key cache)", () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 1000 }), { minLength: 1, maxLength: 40 }), (seqs) => {
        const shared = new MacKey(secret, { uniqueSeq: true });
        const body = Buffer.alloc(50, 3);
        for (const seq of seqs) {
          const a = sealFrame(FrameType.Data, body, shared, seq);
          const b = sealFrame(FrameType.Data, body, new MacKey(secret, { uniqueSeq: true }), seq);
          expect(a.equals(b)).toBe(true);
        }
      }),
      { numRuns: 100 },
    );
  });

  /** Poly1305 (RFC 8439 §2.5), written from the RFC with BigInt: the reference for the tests. */
  function poly1305(key: Uint8Array, msg: Uint8Array): Buffer {
    const le = (b: Uint8Array) => BigInt(`0x${Buffer.from(b).reverse().toString("hex") || "0"}`);
    const r = le(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
    const s = le(key.subarray(16, 32));
    const p = (1n << 130n) - 5n;
    let acc = 0n;
    for (let i = 0; i < msg.length; i += 16) {
      const block = Buffer.concat([msg.subarray(i, i + 16), Buffer.from([1])]);
      acc = ((acc + le(block)) * r) % p;
    }
    const tag = (acc + s) & ((1n << 128n) - 1n);
    return Buffer.from(tag.toString(16).padStart(32, "0"), "hex").reverse();
  }

  it("the BigInt Poly1305 reference gives RFC 8439's test vector (§2.5.2)", () => {
    const key = Buffer.from("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b", "hex");
    const tag = poly1305(key, Buffer.from("Cryptographic Forum Research Group"));
    expect(tag.toString("hex")).toBe("a8061dc1305136c6c22b8baf0c0127a9");
  });

  it("the tag is Poly1305 under the ChaCha20 keystream's one-time key for the sequence number", () => {
    // The keystream from OpenSSL's ChaCha20 through node:crypto (IV = counter LE || nonce).
    const streamKey = createHmac("sha256", secret).update("faultline/v1/mac/poly1305-keystream").digest();
    const key = new MacKey(secret, { uniqueSeq: true });
    for (const [size, seq] of [
      [0, 0],
      [100, 7],
      [4096, 63],
      [4096, 64],
      [1000, 2 ** 40 + 3],
      [17, 5],
    ] as const) {
      const f = sealFrame(FrameType.Data, Buffer.alloc(size, 5), key, seq);
      const iv = Buffer.alloc(16);
      const block = Math.floor(seq / 64);
      iv.writeUInt32BE(Math.floor(block / 2 ** 32), 8);
      iv.writeUInt32BE(block >>> 0, 12);
      const c = createCipheriv("chacha20", streamKey, iv);
      const stream = c.update(Buffer.alloc(64 * 32));
      const otk = stream.subarray((seq % 64) * 32, (seq % 64) * 32 + 32);
      const want = poly1305(otk, f.subarray(0, f.length - 16));
      expect(want.equals(f.subarray(f.length - 16))).toBe(true);
    }
  });

  it("OpenSSL's Poly1305 (the addon) and libsodium's both give the reference's tags", () => {
    // Both implementations of the frame MAC's Poly1305 must agree with the RFC bit for bit: a
    // node using one and a peer using the other must accept each other's frames. Lengths of every
    // residue mod 16, tags of a prefix (`end`), keys with every bit pattern.
    expect(passesTestVector(fastPoly1305)).toBe(true);
    expect(passesTestVector(poly1305Sodium)).toBe(true);
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 5000 }),
        fc.nat(),
        (k, m, cut) => {
          const key = Buffer.from(k);
          const data = Buffer.from(m);
          const end = data.length === 0 ? 0 : cut % (data.length + 1);
          const want = poly1305(key, data.subarray(0, end));
          for (const f of [fastPoly1305, poly1305Sodium]) {
            const out = Buffer.alloc(16);
            f(out, key, data, end);
            expect(out.toString("hex")).toBe(want.toString("hex"));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("frames use OpenSSL's Poly1305: npm install built the addon (native/poly1305.c)", () => {
    // Without it faultline still works (libsodium's Poly1305, same tags) but a 4 KiB frame's MAC
    // costs 2-4 times as much; CI must not lose the fast path silently.
    expect(poly1305Impl).toEqual({ impl: "openssl" });
  });

  it("the addon is loaded only from faultline's own build, ours alone, for this very Node", () => {
    const root = mkdtempSync(join(tmpdir(), "faultline-addon-"));
    try {
      const here = addonPaths();
      mkdirSync(join(root, "native"));
      copyFileSync(here.source, join(root, "native", "poly1305.c"));
      const { binary } = addonPaths(root);
      expect(binary.endsWith(basename(here.binary))).toBe(true); // same source, same Node: same name
      expect(loadPoly1305(root).why).toMatch(/is not built/);
      mkdirSync(dirname(binary), { recursive: true });
      copyFileSync(here.binary, binary);
      chmodSync(binary, 0o777); // anyone could have replaced it
      expect(loadPoly1305(root).why).toMatch(/not ours alone/);
      chmodSync(binary, 0o755);
      expect(loadPoly1305(root).impl).toBe("openssl");
      // Another source (or another Node) names another file: this build is not it.
      writeFileSync(join(root, "native", "poly1305.c"), "/* changed */\n", { flag: "a" });
      expect(loadPoly1305(root).why).toMatch(/is not built/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("the addon refuses bad arguments with a clear error", () => {
    if (poly1305Impl.impl !== "openssl") return;
    const out = Buffer.alloc(16);
    const key = Buffer.alloc(32, 1);
    expect(() => fastPoly1305(out, key, Buffer.alloc(10), 11)).toThrow(/end <= data.length/);
    expect(() => fastPoly1305(out, Buffer.alloc(31), Buffer.alloc(10), 10)).toThrow(/key 32/);
    expect(() => fastPoly1305(Buffer.alloc(15), key, Buffer.alloc(10), 10)).toThrow(/out needs 16/);
    expect(() => fastPoly1305(out, key, "text" as unknown as Buffer, 1)).toThrow(/data must be a Buffer/);
  });

  it("refuses a key shorter than 16 bytes", () => {
    expect(() => new MacKey(Buffer.alloc(8))).toThrow(/16 bytes/);
  });
});
