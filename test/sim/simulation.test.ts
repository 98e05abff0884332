import { describe, expect, it } from "vitest";
import { PingNode } from "../../src/sim/ping.ts";
import { type Invariant, Simulation, SimulationFailure } from "../../src/sim/simulation.ts";

describe("Simulation", () => {
  it("checks invariants after every step and reports the seed and the replay command", () => {
    const noMalformed: Invariant<PingNode> = {
      name: "no-malformed-messages",
      check: (sim) => {
        for (const [id, n] of sim.live())
          if (n.malformed > 0) return `${id} received ${n.malformed} malformed`;
        return undefined;
      },
    };
    const sim = new Simulation<PingNode>({
      seed: 42,
      nodes: 3,
      invariants: [noMalformed],
      replay: "npm run sim -- --scenario demo",
      create: (ctx) => new PingNode({ ...ctx, peers: ctx.nodes }, { intervalMs: 100 }),
    }).start();
    sim.runUntil(1000);
    sim.at(1500, "inject garbage", () => sim.transport("n1").send("n2", { t: "ping", seq: "nope" }));
    let failure: unknown;
    try {
      sim.runUntil(3000);
    } catch (e) {
      failure = e;
    }
    expect(failure).toBeInstanceOf(SimulationFailure);
    const f = failure as SimulationFailure;
    expect(f.code).toBe("FL_INVARIANT");
    expect(f.seed).toBe(42);
    expect(f.invariant).toBe("no-malformed-messages");
    expect(f.atMs).toBeGreaterThanOrEqual(1500);
    expect(f.atMs).toBeLessThan(1501);
    expect(f.message).toContain("npm run sim -- --scenario demo --seed 42");
    expect(f.recentTrace.some((l) => l.includes("inject garbage"))).toBe(true);
  });

  it("a paused node's timers fire late, never lost, and cancel() is honoured while held", () => {
    const fired: Array<[string, number]> = [];
    let cancelMe: { cancel(): void } | undefined;
    const sim = new Simulation({
      seed: 1,
      nodes: 1,
      create: (ctx) => ({
        start() {
          ctx.clock.setTimer(100, () => fired.push(["a", ctx.clock.now()]));
          cancelMe = ctx.clock.setTimer(200, () => fired.push(["cancelled", ctx.clock.now()]));
          ctx.clock.setTimer(300, () => fired.push(["b", ctx.clock.now()]));
        },
      }),
    }).start();
    sim.runUntil(50);
    sim.pause("n1");
    sim.runUntil(250);
    expect(fired).toEqual([]);
    cancelMe!.cancel();
    sim.resume("n1");
    sim.runUntil(1000);
    expect(fired).toEqual([
      ["a", 250],
      ["b", 300],
    ]);
  });

  it("a crashed node's pending timers and in-flight frames die with it", () => {
    let fired = 0;
    const sim = new Simulation({
      seed: 1,
      nodes: 1,
      create: (ctx) => ({
        start() {
          if (ctx.incarnation === 0) ctx.clock.setTimer(100, () => fired++);
        },
      }),
    }).start();
    sim.runUntil(50);
    sim.crash("n1");
    sim.runUntil(60);
    sim.restart("n1");
    sim.runUntil(500);
    expect(fired).toBe(0);
    expect(sim.incarnation("n1")).toBe(1);
  });

  it("an exception out of a node's event fails the seed with its replay command", () => {
    const sim = new Simulation({
      seed: 42,
      nodes: 2,
      replay: "npm run sim -- --scenario toy",
      create: (ctx) => ({
        start: () => {
          if (ctx.id === "n2")
            ctx.clock.setTimer(30, () => {
              throw new Error("the stored log has a gap");
            });
        },
      }),
    }).start();
    let failure: unknown;
    try {
      sim.runUntil(100);
    } catch (e) {
      failure = e;
    }
    expect(failure).toBeInstanceOf(SimulationFailure);
    const f = failure as SimulationFailure;
    expect(f.invariant).toBe("no exception escapes a node");
    expect(f.violation).toMatch(/the stored log has a gap/);
    expect(f.atMs).toBe(30);
    expect(f.replayCommand).toBe("npm run sim -- --scenario toy --seed 42");
  });

  it("rejects duplicate node ids", () => {
    expect(() => new Simulation({ seed: 1, nodes: ["a", "a"], create: () => ({}) })).toThrow(/unique/);
  });
});
