import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { sleep } from "../../src/runtime/clock.ts";
import { VirtualClock } from "../../src/runtime/virtual-clock.ts";

describe("VirtualClock", () => {
  it("only moves when stepped, and runs timers in (time, insertion) order", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 }), { maxLength: 200 }), (delays) => {
        const c = new VirtualClock();
        const fired: Array<[number, number]> = [];
        delays.forEach((d, i) => {
          c.setTimer(d, () => fired.push([c.now(), i]));
        });
        expect(c.now()).toBe(0);
        while (c.step()) {}
        const expected = delays
          .map((d, i) => [d, i] as [number, number])
          .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        expect(fired).toEqual(expected);
      }),
    );
  });

  it("cancelled timers never fire and do not count as pending", () => {
    const c = new VirtualClock();
    let n = 0;
    const t1 = c.setTimer(5, () => n++);
    c.setTimer(10, () => n++);
    t1.cancel();
    t1.cancel();
    expect(c.pending).toBe(1);
    c.advanceTo(100);
    expect(n).toBe(1);
    expect(c.now()).toBe(100);
    expect(c.pending).toBe(0);
  });

  it("timers set while running are ordered with the rest", () => {
    const c = new VirtualClock();
    const seen: string[] = [];
    c.setTimer(1, () => {
      seen.push("a");
      c.setTimer(0, () => seen.push("a0"));
      c.setTimer(5, () => seen.push("a5"));
    });
    c.setTimer(3, () => seen.push("b"));
    c.advance(10);
    expect(seen).toEqual(["a", "a0", "b", "a5"]);
  });

  it("wall time is a fixed epoch plus virtual time, so traces do not depend on the day", () => {
    const c = new VirtualClock();
    const w0 = c.wallNow();
    c.advance(1500);
    expect(c.wallNow() - w0).toBe(1500);
    expect(new VirtualClock().wallNow()).toBe(w0);
  });

  it("sleep() resolves on virtual time and rejects when aborted", async () => {
    const c = new VirtualClock();
    let done = false;
    const p = sleep(c, 50).then(() => {
      done = true;
    });
    c.advance(49);
    await Promise.resolve();
    expect(done).toBe(false);
    c.advance(1);
    await p;
    expect(done).toBe(true);
    const ac = new AbortController();
    const q = sleep(c, 50, ac.signal);
    ac.abort(new Error("stop"));
    await expect(q).rejects.toThrow("stop");
    expect(c.pending).toBe(0);
  });
});
