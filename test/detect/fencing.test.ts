import { describe, expect, it } from "vitest";
import { fenceBound, fencingConfig } from "../../src/agent/lease.ts";
import type { DetectionNode } from "../../src/detect/detection-node.ts";
import type { FailureReport, ReportEvent } from "../../src/detect/report.ts";
import type { NodeId } from "../../src/net/transport.ts";
import { simDetectionNode } from "../../src/sim/scenarios/swim.ts";
import { HostLeases, SimHostAgent } from "../../src/sim/sim-agent.ts";
import { Simulation } from "../../src/sim/simulation.ts";

type N = DetectionNode | SimHostAgent;
const PROCS = ["n1", "n2", "n3", "n4", "n5"];
const AGENTS = PROCS.map((p) => `agent:h${p.slice(1)}`);
const HOSTS: Record<NodeId, string> = {};
for (const p of PROCS) HOSTS[p] = HOSTS[`agent:h${p.slice(1)}`] = `h${p.slice(1)}`;
const FENCING = fencingConfig({ witnesses: AGENTS.slice(0, 3) });

/** Five hosts, each a process and its agent; the first three agents are the witnesses. */
function cluster(seed = 1) {
  const seen: Array<{ at: number; observer: NodeId; r: ReportEvent }> = [];
  const fences: Array<{ at: number; agent: NodeId; why: string }> = [];
  const leases = new Map<string, HostLeases>();
  const leasesOf = (h: string) => leases.get(h) ?? leases.set(h, new HostLeases()).get(h)!;
  const sim: Simulation<N> = new Simulation<N>({
    seed,
    nodes: [...PROCS, ...AGENTS],
    hosts: HOSTS,
    create: (ctx) => {
      const node = simDetectionNode(ctx, { fencing: FENCING });
      node.monitor.subscribe({}, (r) => seen.push({ at: sim.now(), observer: ctx.id, r }));
      if (!ctx.id.startsWith("agent:")) return node;
      const procs = PROCS.filter((p) => HOSTS[p] === ctx.host && sim.state(p) !== "down");
      return new SimHostAgent(
        node,
        ctx,
        ctx.host,
        procs.map((p) => [p, sim.incarnation(p)] as const),
        {
          leases: leasesOf(ctx.host),
          onFence: (why) => {
            fences.push({ at: sim.now(), agent: ctx.id, why });
            // What the real agent does: kill its processes, then exit.
            sim.at(sim.now(), `fence ${ctx.host}`, () => {
              for (const p of procs) sim.crash(p);
              sim.crash(ctx.id);
            });
          },
        },
      );
    },
  });
  sim.onLifecycle((e) => {
    if (e.id.startsWith("agent:") || e.host) return;
    const agent = sim.node(`agent:h${e.id.slice(1)}`);
    if (agent instanceof SimHostAgent)
      agent.local(e.kind === "crash" ? "exit" : "up", e.id, sim.incarnation(e.id));
  });
  sim.start();
  const failures = (subject: NodeId, certainty?: "certain" | "suspected") =>
    seen.filter(
      (s) =>
        s.r.type === "failure" &&
        s.r.subject === subject &&
        (certainty === undefined || (s.r as FailureReport).certainty === certainty),
    );
  return { sim, seen, fences, failures };
}

describe("leases and fences (simulation)", () => {
  it("every agent holds its lease once the witnesses' start-up quarantine is over", () => {
    const { sim } = cluster();
    sim.runUntil(2 * fenceBound(FENCING) + 2000);
    for (const a of AGENTS) expect((sim.node(a) as SimHostAgent).holdsLease()).toBe(true);
  });

  it("a crashed host is reported host-crash, then certain once its agent is fenced, by every live member", () => {
    const { sim, failures, fences } = cluster();
    sim.runUntil(10_000);
    sim.crash("n5", { host: true });
    sim.runUntil(60_000);
    const observers = [...PROCS, ...AGENTS].filter((id) => HOSTS[id] !== "h5");
    for (const subject of ["n5", "agent:h5"]) {
      const suspected = failures(subject, "suspected");
      const certain = failures(subject, "certain");
      expect(new Set(suspected.map((s) => s.observer))).toEqual(new Set(observers));
      expect(new Set(certain.map((s) => s.observer))).toEqual(new Set(observers));
      for (const c of certain) {
        expect(c.r).toMatchObject({ kind: "host-crash", boot: "0" });
        expect((c.r as FailureReport).evidence.some((e) => e.source === "fence")).toBe(true);
        const first = suspected.find((s) => s.observer === c.observer)!;
        expect(c.at).toBeGreaterThanOrEqual(first.at + fenceBound(FENCING));
        // Suspicion (a few probe periods), the fence round, then the bound: well within 30 s.
        expect(c.at - 10_000).toBeLessThan(30_000);
      }
    }
    expect(fences).toEqual([]); // nothing on the live hosts was fenced
  });

  it("a host cut off from the cluster fences itself before anyone calls its crash certain", () => {
    const { sim, failures, fences } = cluster();
    sim.runUntil(10_000);
    const h5 = ["n5", "agent:h5"];
    sim.network.partition([h5, [...PROCS, ...AGENTS].filter((id) => !h5.includes(id))]);
    sim.runUntil(60_000);
    expect(fences.map((f) => f.agent)).toEqual(["agent:h5"]);
    expect(sim.state("n5")).toBe("down");
    const certain = [...failures("n5", "certain"), ...failures("agent:h5", "certain")];
    expect(certain.length).toBe(16); // 8 live observers, 2 subjects
    for (const c of certain) expect(c.at).toBeGreaterThan(fences[0]!.at);
    // The far side named nobody on the majority side as crashed.
    for (const id of PROCS.slice(0, 4)) expect(failures(id)).toEqual([]);
  });

  it("a fenced host that comes back (its supervisor starts it again) is reported recovered", () => {
    const { sim, seen } = cluster();
    sim.runUntil(10_000);
    const h5 = ["n5", "agent:h5"];
    const sides = [h5, [...PROCS, ...AGENTS].filter((id) => !h5.includes(id))];
    sim.network.partition(sides);
    sim.runUntil(40_000);
    sim.network.unpartition(sides);
    sim.restart("agent:h5");
    sim.restart("n5");
    sim.runUntil(90_000);
    for (const [id, n] of sim.live()) {
      const node = n instanceof SimHostAgent ? n.node : n;
      expect(node.monitor.snapshot(), `${id}'s current view`).toEqual([]);
    }
    const recovered = seen.filter((s) => s.r.type === "recovered" && s.r.subject === "n5");
    const others = [...PROCS, ...AGENTS].filter((id) => HOSTS[id] !== "h5");
    for (const o of others) expect(recovered.map((s) => s.observer)).toContain(o);
  });

  it("without witnesses nothing is ever certain about a silent host", () => {
    const seen: ReportEvent[] = [];
    const sim = new Simulation<DetectionNode>({
      seed: 3,
      nodes: 5,
      create: (ctx) => {
        const n = simDetectionNode(ctx);
        n.monitor.subscribe({}, (r) => seen.push(r));
        return n;
      },
    }).start();
    sim.runUntil(5000);
    sim.crash("n5", { host: true });
    sim.runUntil(60_000);
    const f = seen.filter((r) => r.type === "failure") as FailureReport[];
    expect(f.length).toBeGreaterThan(0);
    for (const r of f) expect(r).toMatchObject({ kind: "host-crash", certainty: "suspected" });
  });
});
