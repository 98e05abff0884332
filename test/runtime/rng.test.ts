import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createRng } from "../../src/runtime/rng.ts";

describe("Rng (xoshiro128**)", () => {
  it("is a pure function of its seed", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (seed) => {
        const a = createRng(seed);
        const b = createRng(seed);
        for (let i = 0; i < 50; i++) expect(a.u32()).toBe(b.u32());
      }),
    );
  });

  it("different seeds give different streams", () => {
    const a = createRng(1);
    const b = createRng(2);
    const sa = Array.from({ length: 8 }, () => a.u32());
    const sb = Array.from({ length: 8 }, () => b.u32());
    expect(sa).not.toEqual(sb);
  });

  it("int(n) stays in range and is roughly uniform", () => {
    const r = createRng(42);
    const counts = new Array(10).fill(0);
    const n = 100_000;
    let outOfRange = 0;
    for (let i = 0; i < n; i++) {
      const v = r.int(10);
      if (!(v >= 0 && v < 10 && Number.isInteger(v))) outOfRange++;
      else counts[v]++;
    }
    expect(outOfRange).toBe(0);
    // chi-square with 9 degrees of freedom; 27.9 is the 0.999 quantile
    const chi = counts.reduce((s, c) => s + (c - n / 10) ** 2 / (n / 10), 0);
    expect(chi).toBeLessThan(27.9);
  });

  it("fork(label) is stable and independent of the parent's position", () => {
    const a = createRng(7);
    a.u32();
    const fa = a.fork("x");
    const fb = createRng(7).fork("x");
    expect(fa.u32()).toBe(fb.u32());
    expect(createRng(7).fork("y").u32()).not.toBe(createRng(7).fork("x").u32());
  });

  it("shuffle is a permutation", () => {
    fc.assert(
      fc.property(fc.array(fc.integer()), fc.nat(), (xs, seed) => {
        const out = createRng(seed).shuffle([...xs]);
        expect([...out].sort((p, q) => p - q)).toEqual([...xs].sort((p, q) => p - q));
      }),
    );
  });

  it("rejects int(0) with a clear error", () => {
    expect(() => createRng(1).int(0)).toThrow(/n > 0/);
  });
});
