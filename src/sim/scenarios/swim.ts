import { type FencingConfig, fencingConfig } from "../../agent/lease.ts";
import { DetectionNode, type DetectionNodeOptions } from "../../detect/detection-node.ts";
import type { FailureReport } from "../../detect/report.ts";
import type { NodeId } from "../../net/transport.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import type { Scenario, ScenarioOptions } from "../scenario.ts";
import { HostLeases, SimHostAgent, type SimLeaseOptions } from "../sim-agent.ts";
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
    host: ctx.host,
    boot: String(ctx.incarnation),
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

type Mode = "plain" | "agents" | "fencing";
const SCENARIO_NAME: Record<Mode, string> = { plain: "swim", agents: "swim-agents", fencing: "swim-fencing" };

/** How long a supervisor takes to start a fenced process or agent again (ms). */
const SUPERVISOR_RESTART_MS = 1000;

function runSwim(o: ScenarioOptions, mode: Mode): SimulationResult {
  const withAgents = mode !== "plain";
  const violations: string[] = [];
  let aboutLive = 0;
  let reports = 0;
  let certain = 0;
  let certainHostCrash = 0;
  let fences = 0;
  const reportedAbout: NodeId[] = [];
  const invariants: Invariant<SwimSimNode>[] = [{ name: "report-sanity", check: () => violations[0] }];
  const name = SCENARIO_NAME[mode];
  const replay = `npm run sim -- --scenario ${name} --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
  // With agents, every process node has a host of its own, shared with that host's agent.
  const procs = nodeIds(o.nodes);
  const agentOf = (id: NodeId) => `agent:h${id.slice(1)}`;
  const ids = withAgents ? [...procs, ...procs.map(agentOf)] : procs;
  const hosts: Record<NodeId, string> = {};
  if (withAgents) for (const p of procs) hosts[p] = hosts[agentOf(p)] = `h${p.slice(1)}`;
  // With fencing: the first three hosts' agents are the witnesses.
  const fencing =
    mode === "fencing" ? fencingConfig({ witnesses: procs.slice(0, 3).map(agentOf) }) : undefined;
  const leases = new Map<string, HostLeases>();
  const leasesOf = (host: string) => leases.get(host) ?? leases.set(host, new HostLeases()).get(host)!;
  /** Whether a paused life can no longer act: its lease has ended (it fences itself on waking). */
  const leaseEnded = (id: NodeId): boolean => {
    if (!fencing) return false;
    const n = sim.node(id);
    if (n instanceof SimHostAgent) return !n.holdsLease();
    const until = leasesOf(sim.hostOf(id)).of(id, sim.incarnation(id));
    return until !== undefined && until <= sim.now();
  };
  /** A lease ended: the process (or the agent with its host's processes) stops; a supervisor restarts it. */
  const fence = (targets: NodeId[], why: string) => {
    fences++;
    sim.at(sim.now(), `fence ${targets.join(",")}: ${why}`, () => {
      for (const t of targets) sim.crash(t);
      sim.at(sim.now() + SUPERVISOR_RESTART_MS, `supervisor restarts ${targets.join(",")}`, () => {
        for (const t of [...targets].reverse()) sim.restart(t);
      });
    });
  };
  const sim: Simulation<SwimSimNode> = new Simulation<SwimSimNode>({
    seed: o.seed,
    nodes: ids,
    hosts,
    invariants,
    replay,
    keepTrace: o.keepTrace ?? false,
    create: (ctx) => {
      const node = simDetectionNode(ctx, fencing ? { fencing } : {});
      node.monitor.subscribe({ recovered: false }, (r) => {
        const f = r as FailureReport;
        reports++;
        reportedAbout.push(f.subject);
        ctx.trace(`report ${f.kind} ${f.certainty} ${f.subject}${f.boot ? `#${f.boot}` : ""}`);
        if (f.subject === ctx.id) violations.push(`${ctx.id} reported itself failed`);
        const state = sim.state(f.subject);
        if (f.certainty === "certain") {
          certain++;
          if (f.kind === "host-crash") certainHostCrash++;
          // Never wrong: the incarnation it names (or, if it names none, the subject) is down, or
          // stopped with its lease ended (it fences itself the moment it runs again).
          const live =
            state !== "down" &&
            (f.boot === undefined || f.boot === String(sim.incarnation(f.subject))) &&
            !(state === "paused" && leaseEnded(f.subject));
          if (live)
            violations.push(
              `${ctx.id} reported ${f.subject}${f.boot ? `#${f.boot}` : ""} ${f.kind} certain, but it is ${state}`,
            );
        }
        if (state !== "down") aboutLive++;
      });
      const host = sim.hostOf(ctx.id);
      if (!ctx.id.startsWith("agent:")) {
        if (fencing && withAgents)
          watchProcessLease(ctx, leasesOf(host), fencing, (why) => fence([ctx.id], why));
        return node;
      }
      // A restarted agent finds its host's processes running (it would see them register again).
      const local = procs
        .filter((p) => hosts[p] === host && sim.state(p) !== "down")
        .map((p) => [p, sim.incarnation(p)] as const);
      const lease: SimLeaseOptions | undefined = fencing
        ? {
            leases: leasesOf(host),
            onFence: (why) =>
              fence([...procs.filter((p) => hosts[p] === host && sim.state(p) !== "down"), ctx.id], why),
          }
        : undefined;
      return new SimHostAgent(node, ctx, host, local, lease);
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
    if (fencing && sim.rng.float() < 0.5) {
      // Random faults rarely keep a host down long enough for a fence: one long host crash.
      const victim = sim.rng.pick(procs);
      const at = sim.rng.range(5000, 20_000);
      touched.add(victim).add(agentOf(victim));
      sim.at(at, `long host crash ${hosts[victim]}`, () => sim.crash(victim, { host: true }));
      sim.at(at + 30_000, `restart host ${hosts[victim]}`, () => sim.restart(victim));
    }
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
    nodeSeconds: (ids.length * o.durationMs) / 1000,
    ...(fencing ? { certainHostCrashReports: certainHostCrash, leaseFences: fences } : {}),
  };
  if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
  return result;
}

export const swimScenario: Scenario = {
  name: "swim",
  description:
    "SWIM membership + typed reports under random faults; certain reports never wrong; convergence",
  defaults: { nodes: 5, durationMs: 120_000 },
  run: (o) => runSwim(o, "plain"),
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
  run: (o) => runSwim(o, "agents"),
};

/**
 * The same, with leases and fences (agent/lease.ts): the first three hosts' agents are the
 * witnesses; a silent host's agent is fenced, and its crash becomes certain once its lease has
 * surely ended. Agents and processes whose lease ends stop (and their supervisor restarts them).
 * Checked after every step: a certain report — host crashes included — never names a life that
 * can still act.
 */
export const swimFencingScenario: Scenario = {
  name: "swim-fencing",
  description: "swim-agents with leases and fences: certain host-crash reports, never wrong",
  defaults: { nodes: 5, durationMs: 120_000 },
  run: (o) => runSwim(o, "fencing"),
};

/**
 * A simulated process's side of its process lease: once it has held one, it stops when the lease
 * ends (what the AgentClient's fence hook does in a real process).
 */
function watchProcessLease(
  ctx: SimContext,
  leases: HostLeases,
  c: FencingConfig,
  onEnd: (why: string) => void,
): void {
  const check = () => {
    const now = ctx.clock.now();
    const until = leases.of(ctx.id, ctx.incarnation);
    if (until !== undefined && now >= until) {
      ctx.trace("process lease ended: fencing itself");
      onEnd("process lease ended");
      return;
    }
    ctx.clock.setTimer(until !== undefined ? until - now : c.processLeaseMs / 4, check);
  };
  check();
}
