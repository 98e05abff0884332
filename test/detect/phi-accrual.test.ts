import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PhiAccrual } from "../../src/detect/phi-accrual.ts";

describe("PhiAccrual", () => {
  it("is 0 before the first heartbeat and rises the longer the silence lasts", () => {
    fc.assert(
      fc.property(fc.integer({ min: 50, max: 2000 }), fc.integer({ min: 5, max: 50 }), (interval, beats) => {
        const phi = new PhiAccrual({ firstIntervalMs: interval });
        expect(phi.phi(0)).toBe(0);
        let t = 0;
        for (let i = 0; i < beats; i++) {
          t += interval;
          phi.heartbeat(t);
        }
        let last = -1;
        for (let k = 0; k <= 10; k++) {
          const v = phi.phi(t + (k * interval) / 2);
          expect(v).toBeGreaterThanOrEqual(last);
          last = v;
        }
        expect(phi.phi(t + interval / 2)).toBeLessThan(1); // on time: no suspicion
        expect(phi.phi(t + 10 * interval)).toBeGreaterThan(8); // long overdue: strong suspicion
      }),
    );
  });

  it("tracks the mean inter-arrival time of a steady sender", () => {
    const phi = new PhiAccrual({ firstIntervalMs: 1000, windowSize: 50 });
    for (let i = 1; i <= 200; i++) phi.heartbeat(i * 300);
    expect(phi.mean()).toBeCloseTo(300, 5);
  });
});
