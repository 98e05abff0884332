// The simulator at scale: N nodes of the ping protocol for 60 s of virtual time on one core.
import { PingNode } from "../src/sim/ping.ts";
import { Simulation } from "../src/sim/simulation.ts";
import { fmt, table } from "./lib.ts";

export function benchSim(quick = false): string {
  const rows: (string | number)[][] = [];
  for (const nodes of quick ? [100, 1000] : [100, 1000, 2000]) {
    const t0 = performance.now();
    const sim = new Simulation<PingNode>({
      seed: 1,
      nodes,
      create: (ctx) => new PingNode({ ...ctx, peers: ctx.nodes }, { intervalMs: 1000 }),
    }).start();
    sim.runUntil(60_000);
    const r = sim.finish();
    const wall = (performance.now() - t0) / 1000;
    rows.push([nodes, "60", r.steps, r.frames.delivered, fmt(wall, 2), fmt(r.steps / wall / 1000, 0)]);
  }
  return [
    "Simulator: ping protocol, 1 ping/node/s, traces hashed, invariant hook per step:",
    "",
    table(["nodes", "virtual s", "steps", "frames delivered", "wall s", "k steps/s"], rows),
  ].join("\n");
}
