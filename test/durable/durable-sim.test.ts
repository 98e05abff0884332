import { describe, expect, it } from "vitest";
import { durableScenario } from "../../src/sim/scenarios/durable.ts";
import { runSwarm } from "../../src/sim/swarm.ts";

describe("durable processes in simulation", () => {
  it("500 seeds of random faults and crashes right after commits and receives: exactly once, in order, nothing lost", async () => {
    const failures: string[] = [];
    const stats: Record<string, number> = {};
    // Ten seeds at a time, yielding in between so that the test worker stays responsive.
    for (let first = 1; first <= 500; first += 10) {
      const r = runSwarm(durableScenario, {
        seeds: 10,
        firstSeed: first,
        nodes: 4,
        durationMs: 40_000,
        faults: true,
      });
      failures.push(...r.failures.map((f) => f.message));
      for (const [k, v] of Object.entries(r.stats)) stats[k] = (stats[k] ?? 0) + v;
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(failures).toEqual([]);
    expect(stats.produced).toBeGreaterThan(100_000);
    expect(stats.crashesAfterCommit).toBeGreaterThan(1000);
    expect(stats.crashesAfterReceive).toBeGreaterThan(1000);
  }, 600_000);
});
