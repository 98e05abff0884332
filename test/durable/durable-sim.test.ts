import { describe, expect, it } from "vitest";
import { durableScenario } from "../../src/sim/scenarios/durable.ts";
import { swarmInChunks } from "../fixtures/swarm.ts";

describe("durable processes in simulation", () => {
  it("500 seeds of random faults and crashes right after commits and receives: exactly once, in order, nothing lost", async () => {
    const { failures, stats } = await swarmInChunks(durableScenario, {
      seeds: 500,
      nodes: 4,
      durationMs: 40_000,
    });
    expect(failures).toEqual([]);
    expect(stats.produced).toBeGreaterThan(100_000);
    expect(stats.crashesAfterCommit).toBeGreaterThan(1000);
    expect(stats.crashesAfterReceive).toBeGreaterThan(1000);
  }, 600_000);
});
