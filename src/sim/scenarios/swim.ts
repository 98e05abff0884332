import { DetectionNode, type DetectionNodeOptions } from "../../detect/detection-node.ts";
import type { FailureReport } from "../../detect/report.ts";
import type { NodeId } from "../../net/transport.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import type { Scenario, ScenarioOptions } from "../scenario.ts";
import { SimHostAgent } from "../sim-agent.ts";
import {
  type Invariant,
  nodeIds,
  type SimContext,
  Simulation,
  type SimulationResult,
} from "../simulation.ts";

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
type SwimSimNode = DetectionNode | SimHostAgent;
const detection = (n: SwimSimNode): DetectionNode => (n instanceof SimHostAgent ? n.node : n);

function runSwim(o: ScenarioOptions, withAgents: boolean): SimulationResult {
  const violations: string[] = [];
  let aboutLive = 0;
  let reports = 0;
  let certain = 0;
  const reportedAbout: NodeId[] = [];
  const invariants: Invariant<SwimSimNode>[] = [{ name: "report-sanity", check: () => violations[0] }];
  const name = withAgents ? "swim-agents" : "swim";
  const replay = `npm run sim -- --scenario ${name} --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
  // With agents, every process node has a host of its own, shared with that host's agent.
  const procs = nodeIds(o.nodes);
  const agentOf = (id: NodeId) => `agent:h${id.slice(1)}`;
  const ids = withAgents ? [...procs, ...procs.map(agentOf)] : procs;
  const hosts: Record<NodeId, string> = {};
  if (withAgents) for (const p of procs) hosts[p] = hosts[agentOf(p)] = `h${p.slice(1)}`;
  const sim: Simulation<SwimSimNode> = new Simulation<SwimSimNode>({
    seed: o.seed,
    nodes: ids,
    hosts,
    invariants,
    replay,
    keepTrace: o.keepTrace ?? false,
    create: (ctx) => {
      const node = simDetectionNode(ctx);
      node.monitor.subscribe({ recovered: false }, (r) => {
        const f = r as FailureReport;
        reports++;
        reportedAbout.push(f.subject);
        ctx.trace(`report ${f.kind} ${f.certainty} ${f.subject}${f.boot ? `#${f.boot}` : ""}`);
        if (f.subject === ctx.id) violations.push(`${ctx.id} reported itself failed`);
        const state = sim.state(f.subject);
        if (f.certainty === "certain") {
          certain++;
          // Never wrong: the incarnation it names (or, if it names none, the subject) is down.
          const live =
            state !== "down" && (f.boot === undefined || f.boot === String(sim.incarnation(f.subject)));
          if (live)
            violations.push(
              `${ctx.id} reported ${f.subject}${f.boot ? `#${f.boot}` : ""} ${f.kind} certain, but it is ${state}`,
            );
        }
        if (state !== "down") aboutLive++;
      });
      if (!ctx.id.startsWith("agent:")) return node;
      const host = sim.hostOf(ctx.id);
      // A restarted agent finds its host's processes running (it would see them register again).
      const local = procs
        .filter((p) => hosts[p] === host && sim.state(p) !== "down")
        .map((p) => [p, sim.incarnation(p)] as const);
      return new SimHostAgent(node, ctx, host, local);
    },
  });
  if (withAgents) {
    // The kernel and /proc of each host, as its agent sees them.
    sim.onLifecycle((e) => {
      if (e.id.startsWith("agent:") || e.host) return;
      const agent = sim.node(agentOf(e.id));
      if (agent instanceof SimHostAgent)
        agent.local(e.kind === "crash" ? "exit" : "up", e.id, sim.incarnation(e.id));
    });
  }
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
        `the ${name} scenario needs 60 s of quiet after its faults: give it a longer --duration`,
      );
    }
  }
  sim.runUntil(o.durationMs);
  // Convergence after the quiet period: everyone up, everyone alive in every view, nothing failed.
  for (const [id, n] of sim.live()) {
    const node = detection(n);
    for (const other of sim.ids) {
      if (other === id) continue;
      const m = node.swim.core.member(other);
      if (m?.status !== "alive")
        sim.fail("convergence", `${id} sees ${other} as ${m?.status ?? "unknown"} after the quiet period`);
    }
    const current = node.monitor.snapshot();
    if (current.length > 0) {
      sim.fail(
        "convergence",
        `${id} still reports ${current.map((r) => `${r.subject}:${r.kind}`).join(", ")}`,
      );
    }
  }
  const result = sim.finish();
  result.stats = {
    reports,
    certainReports: certain,
    reportsAboutLiveNodes: aboutLive,
    reportsAboutUntouchedNodes: reportedAbout.filter((n) => !touched.has(n)).length,
  };
  if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
  return result;
}

export const swimScenario: Scenario = {
  name: "swim",
  description:
    "SWIM membership + typed reports under random faults; certain reports never wrong; convergence",
  defaults: { nodes: 5, durationMs: 120_000 },
  run: (o) => runSwim(o, false),
};

/**
 * The same, with a host agent beside every process (each on a host of its own): process crashes
 * are reported certain by the agents' notices, which travel the faulty network like everything
 * else. Checked after every step: a certain report never names an incarnation that is running.
 */
export const swimAgentsScenario: Scenario = {
  name: "swim-agents",
  description: "swim with a host agent per process host: certain process-exit reports, never wrong",
  defaults: { nodes: 5, durationMs: 120_000 },
  run: (o) => runSwim(o, true),
};
