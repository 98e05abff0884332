import { DetectionNode, type DetectionNodeOptions } from "../../detect/detection-node.ts";
import type { FailureReport } from "../../detect/report.ts";
import type { NodeId } from "../../net/transport.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import type { Scenario } from "../scenario.ts";
import { type Invariant, type SimContext, Simulation } from "../simulation.ts";

/**
 * A DetectionNode on a simulated node: its clock, randomness and transport, every other node as a
 * seed unless `extra` says otherwise.
 */
export function simDetectionNode(ctx: SimContext, extra: Partial<DetectionNodeOptions> = {}): DetectionNode {
  return new DetectionNode({
    id: ctx.id,
    clock: ctx.clock,
    rng: ctx.rng,
    transport: ctx.transport,
    seeds: ctx.nodes.filter((n) => n !== ctx.id),
    ...extra,
  });
}

/** Faults happen in the first part of a run; the rest is quiet, so the cluster must converge. */
const FAULT_WINDOW_MS = 30_000;

/**
 * SWIM detection under random faults (crashes and host crashes with restart, pauses, partitions,
 * degraded and flapping links). Checked after every step: no node reports itself; a `certain`
 * report is never wrong (its subject is down). Checked at the end, after a quiet period: every
 * node is alive in every view and no failure is current. Measured: reports about nodes that were
 * up when reported (false suspicions, from the application's view), and about nodes no fault
 * touched at all.
 */
export const swimScenario: Scenario = {
  name: "swim",
  description:
    "SWIM membership + typed reports under random faults; certain reports never wrong; convergence",
  defaults: { nodes: 5, durationMs: 120_000 },
  run(o) {
    const violations: string[] = [];
    let aboutLive = 0;
    let reports = 0;
    const reportedAbout: NodeId[] = [];
    const invariants: Invariant<DetectionNode>[] = [{ name: "report-sanity", check: () => violations[0] }];
    const replay = `npm run sim -- --scenario swim --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
    const sim: Simulation<DetectionNode> = new Simulation<DetectionNode>({
      seed: o.seed,
      nodes: o.nodes,
      invariants,
      replay,
      keepTrace: o.keepTrace ?? false,
      create: (ctx) => {
        const node = simDetectionNode(ctx);
        node.monitor.subscribe({ recovered: false }, (r) => {
          const f = r as FailureReport;
          reports++;
          reportedAbout.push(f.subject);
          ctx.trace(`report ${f.kind} ${f.certainty} ${f.subject}`);
          if (f.subject === ctx.id) violations.push(`${ctx.id} reported itself failed`);
          const state = sim.state(f.subject);
          if (f.certainty === "certain" && state !== "down") {
            violations.push(`${ctx.id} reported ${f.subject} ${f.kind} certain, but it is ${state}`);
          }
          if (state !== "down") aboutLive++;
        });
        return node;
      },
    });
    sim.start();
    const touched = new Set<NodeId>();
    if (o.faults) {
      const plan = randomFaults(sim.rng, sim.ids, {
        durationMs: Math.min(FAULT_WINDOW_MS, o.durationMs * 0.4),
      });
      for (const { fault: f } of plan) {
        if (f.kind === "crash" || f.kind === "pause") touched.add(f.node);
        else if (f.kind === "partition") for (const side of f.sides) for (const n of side) touched.add(n);
        else for (const n of [f.a, f.b]) touched.add(n);
      }
      applyFaults(sim, plan);
      if (planEnd(plan) > o.durationMs - 60_000) {
        throw new Error(
          "the swim scenario needs 60 s of quiet after its faults: give it a longer --duration",
        );
      }
    }
    sim.runUntil(o.durationMs);
    // Convergence after the quiet period: everyone up, everyone alive in every view, nothing failed.
    for (const [id, node] of sim.live()) {
      for (const other of sim.ids) {
        if (other === id) continue;
        const m = node.swim.core.member(other);
        if (m?.status !== "alive")
          sim.fail("convergence", `${id} sees ${other} as ${m?.status ?? "unknown"} after the quiet period`);
      }
      const current = node.monitor.snapshot();
      if (current.length > 0)
        sim.fail(
          "convergence",
          `${id} still reports ${current.map((r) => `${r.subject}:${r.kind}`).join(", ")}`,
        );
    }
    const result = sim.finish();
    result.stats = {
      reports,
      reportsAboutLiveNodes: aboutLive,
      reportsAboutUntouchedNodes: reportedAbout.filter((n) => !touched.has(n)).length,
    };
    if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
    return result;
  },
};
