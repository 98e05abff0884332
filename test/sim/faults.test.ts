import { describe, expect, it } from "vitest";
import type { ConnectionEvent } from "../../src/net/transport.ts";
import { pingScenario } from "../../src/sim/scenarios/ping.ts";
import { swarmInChunks } from "../fixtures/swarm.ts";
import { mean, pingSim } from "./ping-harness.ts";

const sideOf = (id: string) => (id === "n1" || id === "n2" ? "A" : "B");

describe("simulated faults have their intended effect on the ping protocol", () => {
  it("the same seed gives a byte-identical trace; another seed a different one", () => {
    const lines: string[][] = [];
    const run = (seed: number) =>
      pingScenario.run({
        seed,
        nodes: 5,
        durationMs: 20_000,
        faults: true,
        keepTrace: true,
        onTrace: (l) => lines.push(l),
      });
    const a = run(11);
    const b = run(11);
    const c = run(12);
    expect(a.traceHash).toBe(b.traceHash);
    expect(lines[0]).toEqual(lines[1]);
    expect(a.traceLines).toBeGreaterThan(100);
    expect(c.traceHash).not.toBe(a.traceHash);
  });

  it("a 2|3 partition stops delivery across the sides only, and healing restores it", () => {
    const { sim, pings } = pingSim({ nodes: 5, ping: { intervalMs: 50, burst: 4 } });
    sim.runUntil(1000);
    sim.network.partition([
      ["n1", "n2"],
      ["n3", "n4", "n5"],
    ]);
    sim.runUntil(3000);
    sim.network.unpartition([
      ["n1", "n2"],
      ["n3", "n4", "n5"],
    ]);
    sim.runUntil(4000);
    const during = pings.filter((p) => p.at >= 1000 && p.at < 3000);
    const across = (p: { from: string; to: string }) => sideOf(p.from) !== sideOf(p.to);
    expect(during.filter(across)).toHaveLength(0);
    expect(during.filter((p) => !across(p)).length).toBeGreaterThan(100);
    expect(pings.filter((p) => p.at < 1000).filter(across).length).toBeGreaterThan(50);
    expect(pings.filter((p) => p.at >= 3000).filter(across).length).toBeGreaterThan(50);
  });

  it("a one-way partition blocks one direction only", () => {
    const { sim, pings, pongs } = pingSim({ nodes: 2, ping: { intervalMs: 20 } });
    sim.network.partition([["n1"], ["n2"]], { oneWay: true });
    sim.runUntil(2000);
    expect(pings.filter((p) => p.from === "n1")).toHaveLength(0); // n1 -> n2 blocked
    expect(pings.filter((p) => p.from === "n2").length).toBeGreaterThan(50); // n2 -> n1 flows
    expect(pongs.filter((p) => p.node === "n2")).toHaveLength(0); // n1's answers cannot reach n2
  });

  it("a bandwidth limit makes RTT grow with offered load, then drops at overload", () => {
    // 50 KB/s bottleneck with a 20 KB queue; ~1 KB pings in bursts every 100 ms.
    const rows = [1, 2, 3, 4, 6, 8].map((burst) => {
      const { sim, pongs } = pingSim({
        nodes: 2,
        network: { bandwidth: 50_000, queueBytes: 20_000 },
        ping: (id) => (id === "n1" ? { intervalMs: 100, burst, payloadBytes: 1000 } : { targets: [] }),
      });
      sim.runUntil(8000);
      const rtt = mean(pongs.filter((p) => p.at > 3000).map((p) => p.rtt));
      return { burst, rtt, drops: sim.network.counters.dropped["queue-overflow"] ?? 0 };
    });
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.rtt).toBeGreaterThan(rows[i - 1]!.rtt);
    expect(rows.filter((r) => r.burst <= 4).every((r) => r.drops === 0)).toBe(true); // under capacity
    expect(rows.filter((r) => r.burst >= 6).every((r) => r.drops > 0)).toBe(true); // over capacity
    expect(rows.at(-1)!.rtt).toBeGreaterThan(10 * rows[0]!.rtt);
  });

  it("a pause delays but loses nothing on a lossless link", () => {
    const { sim, sent, pongs } = pingSim({
      nodes: 2,
      ping: (id) => (id === "n1" ? { intervalMs: 50 } : { targets: [] }),
    });
    sim.runUntil(1000);
    sim.pause("n2");
    sim.runUntil(3000);
    expect(pongs.filter((p) => p.at > 1001 && p.at < 3000)).toHaveLength(0);
    sim.resume("n2");
    sim.runUntil(3500);
    sim.node("n1")!.stop();
    sim.runUntil(4000);
    expect(pongs).toHaveLength(sent.length); // every ping answered
    const heldUp = pongs.filter((p) => p.at >= 3000 && p.at < 3001);
    expect(heldUp.length).toBeGreaterThan(30);
    for (const p of heldUp)
      expect(p.rtt).toBeGreaterThanOrEqual(3000 - sent.find((s) => s.seq === p.seq)!.at - 1e-9);
  });

  it("a crash loses volatile state, keeps the store, and a live host refuses connections", () => {
    const { sim } = pingSim({ nodes: 2, ping: { intervalMs: 50 } });
    const refused: ConnectionEvent[] = [];
    sim.transport("n1").on("connection", (e) => refused.push(e));
    sim.runUntil(1000);
    const before = sim.node("n2")!.nextSeq;
    expect(before).toBeGreaterThan(10);
    sim.crash("n2");
    expect(sim.node("n2")).toBeUndefined();
    sim.runUntil(1500);
    expect(refused.filter((e) => e.kind === "refused" && e.peer === "n2").length).toBeGreaterThan(5);
    sim.restart("n2");
    sim.runUntil(1600);
    const after = sim.node("n2")!;
    expect(after.nextSeq).toBeLessThan(before); // volatile counter started again
    expect(after.boots).toBe(2); // stable storage kept the boot count
    expect(sim.incarnation("n2")).toBe(1);
    // A crashed host answers nothing at all.
    const n = refused.length;
    sim.crash("n2", { host: true });
    sim.runUntil(2500);
    expect(refused.length).toBe(n);
  });

  it("corruption is caught by the frame check and never delivered", () => {
    const { sim, pings, sent, pongs } = pingSim({
      nodes: 2,
      network: { corrupt: 0.3 },
      ping: (id) => (id === "n1" ? { intervalMs: 20 } : { targets: [] }),
    });
    sim.runUntil(10_000);
    const bad = sim.transport("n2").stats().badFrames;
    const rejected = Object.values(bad).reduce((s, n) => s + n, 0);
    expect(rejected).toBeGreaterThan(50);
    expect(sim.network.counters.corrupted).toBeGreaterThanOrEqual(rejected);
    // What was delivered is exactly what was sent: same seq, same peer.
    const sentSeqs = new Set(sent.filter((s) => s.from === "n1").map((s) => s.seq));
    for (const p of pings) expect(sentSeqs.has(p.seq)).toBe(true);
    const n1 = sim.node("n1")!;
    for (const p of pongs) expect(n1.sent.get(p.seq)?.to).toBe("n2");
    expect(pings.length + rejected).toBe(sent.length);
  });

  it("loss drops about the configured fraction; delay and jitter bound the RTT", () => {
    const lossy = pingSim({
      nodes: 2,
      network: { loss: 0.3 },
      ping: (id) => (id === "n1" ? { intervalMs: 10 } : { targets: [] }),
    });
    lossy.sim.runUntil(20_000);
    const fraction = lossy.pings.length / lossy.sent.length;
    expect(fraction).toBeGreaterThan(0.65);
    expect(fraction).toBeLessThan(0.75);

    const slow = pingSim({ nodes: 2, network: { delayMs: 10, jitterMs: 5 }, ping: { intervalMs: 30 } });
    slow.sim.runUntil(5000);
    const rtts = slow.pongs.map((p) => p.rtt);
    expect(Math.min(...rtts)).toBeGreaterThanOrEqual(20);
    expect(Math.max(...rtts)).toBeLessThanOrEqual(30 + 1e-9);
    expect(Math.max(...rtts) - Math.min(...rtts)).toBeGreaterThan(3);
  });

  it("duplication delivers copies; reordering lets later frames overtake", () => {
    const dup = pingSim({
      nodes: 2,
      network: { duplicate: 0.5 },
      ping: (id) => (id === "n1" ? { intervalMs: 10 } : { targets: [] }),
    });
    dup.sim.runUntil(2000);
    expect(dup.pings.length).toBeGreaterThan(dup.sent.length * 1.3);

    const inversions = (reorder: number) => {
      const r = pingSim({
        nodes: 2,
        network: { reorder, reorderWindowMs: 20 },
        ping: (id) => (id === "n1" ? { intervalMs: 5 } : { targets: [] }),
      });
      r.sim.runUntil(2000);
      let n = 0;
      for (let i = 1; i < r.pings.length; i++) if (r.pings[i]!.seq < r.pings[i - 1]!.seq) n++;
      return n;
    };
    expect(inversions(0)).toBe(0);
    expect(inversions(0.5)).toBeGreaterThan(10);
  });

  it("a flapping link delivers in bursts separated by outages", () => {
    const { sim, pings, sent } = pingSim({
      nodes: 2,
      ping: (id) => (id === "n1" ? { intervalMs: 10 } : { targets: [] }),
    });
    sim.runUntil(500);
    sim.network.flap("n1", "n2", { downMs: 300, upMs: 300, cycles: 5 });
    sim.runUntil(4000);
    let gaps = 0;
    for (let i = 1; i < pings.length; i++) if (pings[i]!.at - pings[i - 1]!.at > 250) gaps++;
    expect(gaps).toBe(5);
    expect(pings.filter((p) => p.at > 3500).length).toBeGreaterThan(40); // up for good afterwards
    const early = sent.filter((s) => s.at >= 500 && s.at < 3500).length;
    const got = pings.filter((p) => p.at >= 500 && p.at < 3500).length;
    expect(got / early).toBeGreaterThan(0.4);
    expect(got / early).toBeLessThan(0.6);
  });

  it("survives a random-fault swarm: 500 seeds, invariants checked after every step", async () => {
    const r = await swarmInChunks(pingScenario, { seeds: 500, nodes: 5, durationMs: 20_000 });
    expect(r.failures).toEqual([]);
    expect(r.runs).toBe(500);
  });
});
