import type { NodeId } from "../../net/transport.ts";
import { applyFaults, randomFaults } from "../faults.ts";
import { PingNode } from "../ping.ts";
import type { Scenario } from "../scenario.ts";
import { type Invariant, Simulation } from "../simulation.ts";

/**
 * The ping scenario: every node pings the others once a second under a random fault plan. Its
 * invariants check the simulator and transport themselves: a pong answers a ping this incarnation
 * really sent to that peer at that time (so no corrupted, forged or misrouted frame got through),
 * RTTs are never negative, and a crashed node sends nothing.
 */
export const pingScenario: Scenario = {
  name: "ping",
  description: "ping/pong between all nodes under random faults; checks frame integrity and node isolation",
  defaults: { nodes: 5, durationMs: 30_000 },
  run(o) {
    const violations: string[] = [];
    const invariants: Invariant<PingNode>[] = [{ name: "pong-answers-ping", check: () => violations[0] }];
    const replay = `npm run sim -- --scenario ping --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
    const sim: Simulation<PingNode> = new Simulation<PingNode>({
      seed: o.seed,
      nodes: o.nodes,
      invariants,
      replay,
      keepTrace: o.keepTrace ?? false,
      create: (ctx) => {
        const node = new PingNode({ ...ctx, peers: ctx.nodes });
        node.observer = {
          pinged: () => {
            if (sim.state(ctx.id) === "down") violations.push(`${ctx.id} sent a ping while crashed`);
          },
          pong: (from: NodeId, seq, rtt, at) => {
            const sent = node.sent.get(seq);
            if (!sent)
              violations.push(`${ctx.id} got a pong from ${from} for seq ${seq}, which it never sent`);
            else if (sent.to !== from)
              violations.push(`${ctx.id} got ${sent.to}'s pong (seq ${seq}) from ${from}`);
            else if (sent.at !== at)
              violations.push(`${ctx.id} got a pong for seq ${seq} with an altered timestamp`);
            else if (rtt < 0) violations.push(`${ctx.id} measured a negative RTT ${rtt}`);
          },
        };
        return node;
      },
    });
    sim.start();
    if (o.faults) applyFaults(sim, randomFaults(sim.rng, sim.ids, { durationMs: o.durationMs * 0.8 }));
    sim.runUntil(o.durationMs);
    const result = sim.finish();
    if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
    return result;
  },
};
