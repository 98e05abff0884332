import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  FenceRequestCore,
  fenceBound,
  fencingConfig,
  LeaseHolderCore,
  type LeaseMessage,
  parseLease,
  type Send,
  WitnessCore,
} from "../../src/agent/lease.ts";

const W = ["w1", "w2", "w3"];
const cfg = fencingConfig({ witnesses: W, leaseMs: 4000, processLeaseMs: 1000, driftRate: 0, marginMs: 0 });

describe("lease cores", () => {
  it("a round granted by a majority holds the lease for leaseMs from when it was sent", () => {
    const h = new LeaseHolderCore(cfg, "e1");
    const sends = h.tick(100);
    expect(sends.map((s) => s.to)).toEqual(W);
    h.receive(150, "w1", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    expect(h.holds(150)).toBe(false); // one of three is not a majority
    h.receive(160, "w3", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    expect(h.holds(160)).toBe(true);
    expect(h.remaining(160)).toBe(100 + 4000 - 160);
    expect(h.holds(4100)).toBe(false);
    // Grants from non-witnesses, for another epoch, or for unknown rounds count for nothing.
    const g = new LeaseHolderCore(cfg, "e2");
    g.tick(0);
    g.receive(1, "x", { p: "lease", t: "grant", epoch: "e2", round: 1 });
    g.receive(1, "w1", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    g.receive(1, "w2", { p: "lease", t: "grant", epoch: "e2", round: 9 });
    expect(g.holds(1)).toBe(false);
  });

  it("a lease that lapsed is never revived by late grants: only a new epoch holds again", () => {
    const h = new LeaseHolderCore(cfg, "e1");
    h.tick(0);
    h.receive(1, "w1", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    h.receive(1, "w2", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    h.tick(3000);
    h.receive(4500, "w1", { p: "lease", t: "grant", epoch: "e1", round: 2 });
    h.receive(4500, "w2", { p: "lease", t: "grant", epoch: "e1", round: 2 });
    expect(h.holds(4500)).toBe(false);
  });

  it("a witness says 'fenced': the lease ends at once, whatever else grants", () => {
    const h = new LeaseHolderCore(cfg, "e1");
    h.tick(0);
    h.receive(1, "w1", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    h.receive(1, "w2", { p: "lease", t: "grant", epoch: "e1", round: 1 });
    expect(h.holds(2)).toBe(true);
    h.receive(3, "w3", { p: "lease", t: "refuse", epoch: "e1", round: 1, why: "fenced" });
    expect(h.holds(3)).toBe(false);
    expect(h.fenced).toBe("w3");
  });

  it("a witness grants nothing for fenceBound after it starts, then refuses fenced epochs and waits out unknown ones", () => {
    const w = new WitnessCore(cfg, 0);
    const renew = (now: number, from: string, epoch: string) =>
      w.receive(now, from, { p: "lease", t: "renew", epoch, round: 1 })!.msg as LeaseMessage & {
        why?: string;
      };
    const b = fenceBound(cfg);
    expect(renew(10, "a", "e1")).toMatchObject({ t: "refuse", why: "wait" });
    expect(renew(2 * b - 1, "a", "e1")).toMatchObject({ t: "refuse", why: "wait" }); // two bounds after a start
    expect(renew(2 * b, "a", "e1")).toMatchObject({ t: "grant" });
    expect(w.receive(2 * b + 1, "o", { p: "lease", t: "fence", holder: "a", req: 7 })?.msg).toEqual({
      p: "lease",
      t: "fenced",
      holder: "a",
      req: 7,
    });
    expect(renew(2 * b + 2, "a", "e1")).toMatchObject({ t: "refuse", why: "fenced" });
    expect(renew(100 * b, "a", "e1")).toMatchObject({ t: "refuse", why: "fenced" });
    // An epoch never seen here may be an old one granted elsewhere: two bounds, for it surely ended.
    expect(renew(2 * b + 2, "a", "e2")).toMatchObject({ t: "refuse", why: "wait" });
    expect(renew(4 * b, "a", "e2")).toMatchObject({ t: "refuse", why: "wait" });
    expect(renew(4 * b + 1, "a", "e2")).toMatchObject({ t: "grant" });
    // Other holders are not affected.
    expect(renew(2 * b + 3, "c", "x")).toMatchObject({ t: "grant" });
  });

  it("a fence completes with a majority of answers, at fenceBound after the last one", () => {
    const f = new FenceRequestCore(cfg);
    const asks = f.request(0, "a");
    expect(asks.map((s) => s.to)).toEqual(W);
    const req = (asks[0]!.msg as { req: number }).req;
    expect(f.receive(10, "w1", { p: "lease", t: "fenced", holder: "a", req })).toBeUndefined();
    expect(f.receive(11, "w1", { p: "lease", t: "fenced", holder: "a", req })).toBeUndefined(); // same witness twice
    expect(f.request(5, "a").map((s) => s.to)).toEqual(["w2", "w3"]);
    expect(f.receive(12, "w2", { p: "lease", t: "fenced", holder: "a", req: req + 1 })).toBeUndefined(); // stale req
    expect(f.receive(20, "w3", { p: "lease", t: "fenced", holder: "a", req })).toEqual({
      holder: "a",
      certainAt: 20 + fenceBound(cfg),
    });
    expect(f.request(30, "a")).toEqual([]);
  });

  it("a majority whose fences came too far apart is not accepted: the witnesses are asked again", () => {
    const f = new FenceRequestCore(cfg);
    const req = (f.request(0, "a")[0]!.msg as { req: number }).req;
    f.receive(10, "w1", { p: "lease", t: "fenced", holder: "a", req });
    const late = fenceBound(cfg) + 11;
    expect(f.receive(late, "w2", { p: "lease", t: "fenced", holder: "a", req })).toEqual({
      holder: "a",
      again: true,
    });
    const again = f.request(late, "a");
    expect(again.map((s) => s.to)).toEqual(W);
    expect((again[0]!.msg as { req: number }).req).not.toBe(req);
  });

  it("rejects malformed lease messages and bad configurations", () => {
    for (const bad of [
      { p: "lease", t: "renew", epoch: "", round: 1 },
      { p: "lease", t: "grant", epoch: "e", round: -1 },
      { p: "lease", t: "refuse", epoch: "e", round: 1, why: "because" },
      { p: "lease", t: "fence", holder: 5, req: 1 },
      { p: "lease", t: "what" },
      { p: "lease", t: "renew", epoch: "x".repeat(300), round: 1 },
    ])
      expect(parseLease(bad)).toBeUndefined();
    expect(parseLease({ p: "lease", t: "fenced", holder: "a", req: 3 })).toBeDefined();
    expect(() => fencingConfig({ witnesses: [] })).toThrow(/witness/);
    expect(() => fencingConfig({ witnesses: ["a", "a"] })).toThrow(/distinct/);
    expect(() => fencingConfig({ witnesses: ["a"], leaseMs: 1000, processLeaseMs: 900 })).toThrow(
      /processLeaseMs <= leaseMs \/ 2/,
    );
  });

  /**
   * The safety property, over random schedules: three witnesses (which may restart, losing their
   * fences), one holder whose epochs come and go, an observer that fences it; messages delayed,
   * lost and reordered. Once the fence has completed (the observer's `certainAt` has passed), no
   * epoch that had held a lease by the time the fence completed holds one.
   */
  it("property: after a completed fence, no epoch that was bound by a lease holds one", () => {
    const ev = fc.oneof(
      fc.record({ k: fc.constant("tick" as const), at: fc.integer({ min: 0, max: 60_000 }) }),
      fc.record({ k: fc.constant("new-epoch" as const), at: fc.integer({ min: 0, max: 60_000 }) }),
      fc.record({ k: fc.constant("fence" as const), at: fc.integer({ min: 0, max: 60_000 }) }),
      fc.record({
        k: fc.constant("witness-restart" as const),
        at: fc.integer({ min: 0, max: 60_000 }),
        w: fc.integer({ min: 0, max: 2 }),
      }),
    );
    fc.assert(
      fc.property(
        fc.array(ev, { maxLength: 60 }),
        fc.array(fc.integer({ min: 0, max: 9000 }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 0, max: 3 }),
        // Windows in which the holder cannot reach one witness (asymmetric reachability).
        fc.array(
          fc.record({
            w: fc.integer({ min: 0, max: 2 }),
            from: fc.integer({ min: 0, max: 60_000 }),
            len: fc.integer({ min: 0, max: 30_000 }),
          }),
          { maxLength: 3 },
        ),
        (events, delays, lossMod, cuts) => {
          const cut = (w: string, t: number) =>
            cuts.some((c) => W[c.w] === w && t >= c.from && t < c.from + c.len);
          // A tiny discrete-event world: every message takes a delay from `delays` (cycled) or is lost.
          const queue: Array<{ at: number; seq: number; fn: () => void }> = [];
          let seq = 0;
          const at = (t: number, fn: () => void) => queue.push({ at: t, seq: seq++, fn });
          let n = 0;
          const deliver = (now: number, s: Send, handle: (m: LeaseMessage) => void) => {
            n++;
            if (lossMod > 0 && n % (lossMod + 3) === 0) return;
            at(now + delays[n % delays.length]!, () => handle(s.msg));
          };
          const witnesses = W.map(() => ({ core: new WitnessCore(cfg, 0) }));
          const epochs: Array<{ core: LeaseHolderCore; born: number; alive: boolean }> = [];
          const observer = new FenceRequestCore(cfg);
          /** The epochs that had held a lease when the fence completed: the lease-bound lives. */
          let bound: LeaseHolderCore[] = [];
          let certainAt: number | undefined;
          const toWitness = (
            now: number,
            from: "holder" | "observer",
            s: Send,
            back: (m: LeaseMessage) => void,
          ) => {
            const w = witnesses[W.indexOf(s.to)]!;
            if (from === "holder" && cut(s.to, now)) return;
            deliver(now, s, (m) => {
              const reply = w.core.receive(curr, from === "holder" ? "h" : "o", m);
              if (reply && !(from === "holder" && cut(s.to, curr))) deliver(curr, reply, back);
            });
          };
          let curr = 0;
          const tick = (life: { core: LeaseHolderCore }) => {
            for (const s of life.core.tick(curr)) {
              const from = W[W.indexOf(s.to)]!;
              toWitness(curr, "holder", s, (m) => life.core.receive(curr, from, m));
            }
          };
          const fence = () => {
            if (curr > 120_000) return; // the model's horizon: stop asking again
            for (const s of observer.request(curr, "h")) {
              const from = s.to;
              toWitness(curr, "observer", s, (m) => {
                const done = observer.receive(curr, from, m);
                if (done && "again" in done) fence();
                else if (done && certainAt === undefined) {
                  certainAt = done.certainAt;
                  bound = epochs.filter((x) => x.core.everHeld()).map((x) => x.core);
                }
              });
            }
          };
          for (const e of events) {
            at(e.at, () => {
              if (e.k === "new-epoch") {
                for (const x of epochs) x.alive = false; // the old life stops (crash or fence)
                const life = { core: new LeaseHolderCore(cfg, `e${epochs.length}`), born: curr, alive: true };
                epochs.push(life);
                // A live epoch renews every renewEveryMs, as an agent does.
                const renew = () => {
                  if (!life.alive || curr > 60_000) return;
                  tick(life);
                  at(curr + life.core.renewEveryMs, renew);
                };
                at(curr, renew);
              } else if (e.k === "tick") {
                const live = epochs.find((x) => x.alive);
                if (live) tick(live);
              } else if (e.k === "fence") {
                fence();
              } else {
                witnesses[e.w]!.core = new WitnessCore(cfg, curr);
              }
            });
          }
          for (;;) {
            queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
            const next = queue.shift();
            if (!next) break;
            curr = next.at;
            next.fn();
            if (certainAt !== undefined && curr >= certainAt) {
              for (const x of bound) if (x.holds(curr)) return false;
            }
          }
          return true;
        },
      ),
      { numRuns: 300 },
    );
  });
});
