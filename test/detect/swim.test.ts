import { describe, expect, it } from "vitest";
import type { FailureReport } from "../../src/detect/report.ts";
import { swarmInChunks } from "../fixtures/swarm.ts";
import { type Seen, swimSim } from "./swim-harness.ts";

const others = (ids: readonly string[], but: string) => ids.filter((i) => i !== but);

describe("SWIM membership and detection (simulation)", () => {
  it("forms a cluster through one seed", () => {
    const { sim } = swimSim({ nodes: 8, seeds: (id) => (id === "n1" ? [] : ["n1"]) });
    sim.runUntil(5000);
    for (const [id, node] of sim.live()) {
      const alive = node.swim
        .members()
        .filter((m) => m.status === "alive")
        .map((m) => m.id);
      expect(alive.sort()).toEqual(others(sim.ids, id).sort());
    }
  });

  it("a healthy cluster with 1% loss reports nothing for 5 minutes", () => {
    const { sim, seen } = swimSim({ nodes: 10, network: { loss: 0.01, delayMs: 0.5, jitterMs: 0.5 } });
    sim.runUntil(300_000);
    expect(seen).toEqual([]);
  });

  it("a crashed process on a live host is reported by every live member as process-exit, suspected", () => {
    const { sim, failures } = swimSim({ nodes: 6 });
    sim.runUntil(5000);
    sim.crash("n3");
    sim.runUntil(40_000);
    const about = failures("n3");
    expect(new Set(about.map((s) => s.observer))).toEqual(new Set(others(sim.ids, "n3")));
    for (const s of about) {
      const r = s.report as FailureReport;
      expect(r.kind).toBe("process-exit");
      expect(r.certainty).toBe("suspected");
      expect(r.evidence.map((e) => e.what)).toContain("ECONNREFUSED");
    }
    expect(failures().filter((s) => s.report.subject !== "n3")).toEqual([]);
    // Bounded by the configuration: a failed probe period (≤ 2 intervals), the longest suspicion
    // timeout (suspicionMaxTimeoutMult × suspicionMult × max(1, log10 n) × interval = 24 s for
    // memberlist's defaults and 6 nodes), and a few periods for the verdict to spread.
    expect(Math.max(...about.map((s) => s.at)) - 5000).toBeLessThan(2000 + 24_000 + 3000);
  });

  it("a crashed host (nothing answers) is reported as host-crash, suspected", () => {
    const { sim, failures } = swimSim({ nodes: 6 });
    sim.runUntil(5000);
    sim.crash("n4", { host: true });
    sim.runUntil(40_000);
    const about = failures("n4");
    expect(about).toHaveLength(5);
    for (const s of about) expect((s.report as FailureReport).kind).toBe("host-crash");
  });

  it("a pause shorter than the tolerance produces no report, and the paused node refutes", () => {
    const { sim, seen } = swimSim({ nodes: 6 });
    sim.runUntil(5000);
    const before = sim.node("n2")!.swim.core.incarnation;
    let suspected = 0;
    for (const [id, node] of sim.live()) {
      if (id !== "n2")
        node.swim.on("member", (m) => void (m.id === "n2" && m.status === "suspect" && suspected++));
    }
    sim.pause("n2");
    // 3.5 s: long enough to be suspected, shorter than the 4 s minimum suspicion timeout, which
    // starts only when a probe period has failed.
    sim.runUntil(8500);
    expect(suspected).toBeGreaterThan(0);
    sim.resume("n2");
    sim.runUntil(60_000);
    expect(seen).toEqual([]);
    expect(sim.node("n2")!.swim.core.incarnation).toBeGreaterThan(before);
    for (const [id, node] of sim.live()) {
      if (id !== "n2") expect(node.swim.core.member("n2")?.status).toBe("alive");
    }
  });

  it("a restarted member rejoins and its failure is cleared with a recovered event", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.crash("n5");
    sim.runUntil(40_000);
    sim.restart("n5");
    sim.runUntil(60_000);
    const rec = seen.filter((s) => s.report.type === "recovered" && s.report.subject === "n5");
    expect(new Set(rec.map((s) => s.observer))).toEqual(new Set(["n1", "n2", "n3", "n4"]));
    for (const [id, node] of sim.live()) if (id !== "n5") expect(node.monitor.status("n5").state).toBe("ok");
  });

  it("a graceful leave is not a failure", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.node("n2")!.swim.leave();
    sim.runUntil(5500);
    sim.node("n2")!.stop();
    sim.crash("n2");
    sim.runUntil(40_000);
    expect(seen).toEqual([]);
    for (const [id, node] of sim.live())
      if (id !== "n2") expect(node.swim.core.member("n2")?.status).toBe("left");
  });

  it("malformed, stale and replayed membership messages never create a report", () => {
    const { sim, seen } = swimSim({ nodes: 4 });
    sim.runUntil(5000);
    const n1 = sim.transport("n1");
    const inc = sim.node("n3")!.swim.core.incarnation;
    sim.at(5100, "inject", () => {
      n1.send("n2", { p: "swim", t: "ping", seq: -1, g: [] }); // malformed seq
      n1.send("n2", { p: "swim", t: "ack", seq: 1, g: [{ id: "n3", inc: "x", s: "dead" }] }); // malformed update
      n1.send("n2", { p: "swim", t: "bogus", g: [] }); // unknown type
      n1.send("n2", { p: "swim", t: "ping", seq: 7, g: [{ id: "nobody", inc: 3, s: "dead" }] }); // unknown member
      // A stale suspicion and death about n3 (an incarnation it has already left behind).
      sim.node("n3")!.swim.core.incarnation = inc + 2;
    });
    sim.runUntil(5200);
    sim.at(5300, "stale", () => {
      n1.send("n2", { p: "swim", t: "ping", seq: 8, g: [{ id: "n3", inc: inc + 5, s: "alive" }] });
    });
    sim.runUntil(6000);
    sim.at(6100, "replay", () => {
      n1.send("n2", { p: "swim", t: "ping", seq: 9, g: [{ id: "n3", inc, s: "dead" }] }); // older than inc+5
      n1.send("n2", { p: "swim", t: "ping", seq: 10, g: [{ id: "n3", inc, s: "suspect", by: "n1" }] });
    });
    sim.runUntil(60_000);
    expect(seen).toEqual([]);
    expect(sim.node("n2")!.swim.core.malformed).toBe(3);
    expect(sim.node("n2")!.swim.core.member("nobody")).toBeUndefined();
  });
});

describe("SWIM swarm", () => {
  it("500 seeds of random faults: no self-report, no wrong certain report, convergence after quiet", async () => {
    const { swimScenario } = await import("../../src/sim/scenarios/swim.ts");
    const r = await swarmInChunks(swimScenario, { seeds: 500, nodes: 5, durationMs: 120_000 });
    expect(r.failures).toEqual([]);
    expect(r.stats.reports).toBeGreaterThan(100); // the faults did make SWIM report
    expect(r.stats.reportsAboutUntouchedNodes).toBe(0);
  }, 300_000);
});

describe("path conditions (simulation)", () => {
  const kinds = (seen: Seen[]) =>
    seen.filter((s) => s.report.type === "failure").map((s) => s.report as FailureReport);

  it("a one-link route failure is reported by its two ends as route-failure, and by nobody as a crash", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.network.block("n1", "n3");
    sim.runUntil(60_000);
    const reports = kinds(seen);
    expect(reports.length).toBeGreaterThan(0);
    for (const r of reports) {
      expect(r.kind).toBe("route-failure");
      expect([r.subject, r.peer].sort()).toEqual(["n1", "n3"]);
    }
    expect(new Set(reports.map((r) => r.subject))).toEqual(new Set(["n1", "n3"]));
    sim.network.unblock("n1", "n3");
    sim.runUntil(120_000);
    for (const [, node] of sim.live()) expect(node.monitor.snapshot()).toEqual([]);
  });

  it("a flapping link is reported as route-instability, and nothing else", () => {
    const { sim, seen } = swimSim({ nodes: 5, swim: { probeIntervalMs: 200, probeTimeoutMs: 100 } });
    sim.runUntil(5000);
    sim.network.flap("n2", "n4", { downMs: 700, upMs: 700, cycles: 60 });
    sim.runUntil(90_000);
    const reports = kinds(seen);
    expect(reports.length).toBeGreaterThan(0);
    for (const r of reports) {
      expect(r.kind).toBe("route-instability");
      expect([r.subject, r.peer].sort()).toEqual(["n2", "n4"]);
    }
  });

  it("a corrupting link is reported as corruption, and nothing else", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.network.setLink("n1", "n5", { corrupt: 0.3 });
    sim.runUntil(90_000);
    const reports = kinds(seen);
    expect(reports.length).toBeGreaterThan(0);
    for (const r of reports) {
      expect(r.kind).toBe("corruption");
      expect([r.subject, r.peer].sort()).toEqual(["n1", "n5"]);
    }
    sim.network.resetLink("n1", "n5");
    sim.runUntil(150_000);
    for (const [, node] of sim.live()) expect(node.monitor.snapshot()).toEqual([]);
  });
});

describe("congestion (simulation)", () => {
  it("a bandwidth-limited lossy link under load is reported as congestion, and nothing else", async () => {
    const { PingNode } = await import("../../src/sim/ping.ts");
    const { simDetectionNode } = await import("../../src/sim/scenarios/swim.ts");
    type DetectionNode = ReturnType<typeof simDetectionNode>;
    const { Simulation } = await import("../../src/sim/simulation.ts");
    const seen: Seen[] = [];
    const sim: InstanceType<typeof Simulation<DetectionNode>> = new Simulation({
      seed: 3,
      nodes: 5,
      create: (ctx) => {
        const node = simDetectionNode(ctx);
        node.monitor.subscribe({}, (report) => seen.push({ at: sim.now(), observer: ctx.id, report }));
        // Background traffic n1 -> n3: 40 KB/s of 1 KB pings (the link carries 20 KB/s).
        if (ctx.id === "n1") {
          const load = new PingNode(
            { ...ctx, peers: ctx.nodes },
            { intervalMs: 25, payloadBytes: 1000, targets: ["n3"] },
          );
          const start = node.start.bind(node);
          node.start = () => {
            start();
            ctx.clock.setTimer(20_000, () => load.start());
          };
        }
        return node;
      },
    }).start();
    sim.network.setLink("n1", "n3", { bandwidth: 20_000, queueBytes: 6_000, loss: 0.05 }, { oneWay: true });
    sim.runUntil(90_000);
    const reports = seen.filter((s) => s.report.type === "failure").map((s) => s.report as FailureReport);
    expect(reports.length).toBeGreaterThan(0);
    for (const r of reports) {
      expect(r.kind).toBe("congestion");
      expect([r.subject, r.peer].sort()).toEqual(["n1", "n3"]);
    }
  });
});

describe("partitions (simulation)", () => {
  const failuresOf = (seen: Seen[]) =>
    seen
      .filter((s) => s.report.type === "failure")
      .map((s) => ({ observer: s.observer, r: s.report as FailureReport }));

  it("a 2|3 partition is reported by each side as a partition naming both sides", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    const a = ["n1", "n2"];
    const b = ["n3", "n4", "n5"];
    sim.network.partition([a, b]);
    sim.runUntil(60_000);
    const got = failuresOf(seen);
    expect(got).toHaveLength(2 * 3 + 3 * 2); // everyone reports everyone on the far side
    for (const { observer, r } of got) {
      expect(r.kind).toBe("partition");
      const [near, far] = a.includes(observer) ? [a, b] : [b, a];
      expect(far).toContain(r.subject);
      expect(r.sides).toEqual([near, far]);
    }
    sim.network.unpartition([a, b]);
    sim.runUntil(180_000);
    for (const [, node] of sim.live()) expect(node.monitor.snapshot()).toEqual([]);
  });

  it("a one-way partition is reported as a partition too (round trips fail both ways)", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.network.partition(
      [
        ["n1", "n2"],
        ["n3", "n4", "n5"],
      ],
      { oneWay: true },
    );
    sim.runUntil(60_000);
    const got = failuresOf(seen);
    expect(got.length).toBeGreaterThan(0);
    for (const { r } of got) expect(r.kind).toBe("partition");
  });

  it("a single host cut off one way (its messages still arrive) is a partition, not a host crash", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    // Nothing reaches n3; what n3 sends still arrives.
    sim.network.partition([["n1", "n2", "n4", "n5"], ["n3"]], { oneWay: true });
    sim.runUntil(60_000);
    const got = failuresOf(seen);
    expect(got.filter(({ r }) => r.subject === "n3").length).toBeGreaterThan(0);
    for (const { r } of got) expect(r.kind).toBe("partition");
  });

  it("a single silent host is still a host crash", () => {
    const { sim, seen } = swimSim({ nodes: 5 });
    sim.runUntil(5000);
    sim.crash("n4", { host: true });
    sim.runUntil(60_000);
    for (const { r } of failuresOf(seen)) expect(r.kind).toBe("host-crash");
  });
});

/** Process nodes n1..nK, each on host hI with an agent agent:hI; every report recorded. */
async function agentSim(procs: string[], seed: number, network?: { loss: number }) {
  const { SimHostAgent } = await import("../../src/sim/sim-agent.ts");
  const { simDetectionNode } = await import("../../src/sim/scenarios/swim.ts");
  const { Simulation } = await import("../../src/sim/simulation.ts");
  type N = ReturnType<typeof simDetectionNode> | InstanceType<typeof SimHostAgent>;
  const ids = [...procs, ...procs.map((p) => `agent:h${p.slice(1)}`)];
  const hosts = Object.fromEntries(ids.map((id) => [id, `h${id.at(-1)}`]));
  const seen: Seen[] = [];
  const sim: InstanceType<typeof Simulation<N>> = new Simulation<N>({
    seed,
    nodes: ids,
    hosts,
    ...(network ? { network } : {}),
    create: (ctx) => {
      const node = simDetectionNode(ctx);
      node.monitor.subscribe({}, (report) => seen.push({ at: sim.now(), observer: ctx.id, report }));
      if (!ctx.id.startsWith("agent:")) return node;
      const host = sim.hostOf(ctx.id);
      return new SimHostAgent(node, ctx, host, [[`n${host.slice(1)}`, 0]]);
    },
  });
  return { sim, seen, ids, SimHostAgent };
}

describe("host agents in simulation", () => {
  it("a process crash with its agent alive is reported certain by every member; a host crash is not", async () => {
    const { sim, seen, ids, SimHostAgent } = await agentSim(["n1", "n2", "n3"], 5);
    sim.onLifecycle((e) => {
      const agent = sim.node(`agent:h${e.id.slice(1)}`);
      if (!e.host && !e.id.startsWith("agent:") && agent instanceof SimHostAgent) {
        agent.local(e.kind === "crash" ? "exit" : "up", e.id, sim.incarnation(e.id));
      }
    });
    sim.start();
    sim.runUntil(5000);
    sim.crash("n2");
    sim.runUntil(5010); // milliseconds, not a suspicion timeout
    const certain = seen.filter(
      (s) => s.report.type === "failure" && (s.report as FailureReport).certainty === "certain",
    );
    expect(new Set(certain.map((s) => s.observer))).toEqual(new Set(ids.filter((i) => i !== "n2")));
    for (const s of certain)
      expect(s.report).toMatchObject({ subject: "n2", kind: "process-exit", boot: "0" });
    sim.restart("n2");
    sim.runUntil(20_000);
    for (const [, n] of sim.live()) {
      const dn = n instanceof SimHostAgent ? n.node : n;
      expect(dn.monitor.status("n2").state).toBe("ok");
    }
    // A host crash takes the agent with it: nothing certain, SWIM says host-crash.
    const before = seen.length;
    sim.crash("n3", { host: true });
    expect(sim.state("agent:h3")).toBe("down");
    sim.runUntil(60_000);
    const later = seen
      .slice(before)
      .filter((s) => s.report.type === "failure")
      .map((s) => s.report as FailureReport);
    expect(later.length).toBeGreaterThan(0);
    for (const r of later) expect(r.certainty).toBe("suspected");
  });

  it("a 2|3 partition of hosts with agents (as in the lab) is a partition to everyone, over 200 seeds, however far apart SWIM loses the far side (seeds 53, 56 failed before the recheck)", async () => {
    const procs = ["n1", "n2", "n3", "n4", "n5"];
    const sideOf = (id: string) => (["1", "2"].includes(id.at(-1)!) ? "a" : "b");
    const wrong: string[] = [];
    for (let seed = 1; seed <= 200; seed++) {
      const { sim, seen, ids } = await agentSim(procs, seed);
      sim.start();
      sim.runUntil(10_000);
      const a = ids.filter((i) => sideOf(i) === "a");
      sim.network.partition([a, ids.filter((i) => sideOf(i) === "b")]);
      sim.runUntil(60_000);
      const got = seen.filter((s) => s.report.type === "failure");
      expect(got.length, `seed ${seed}`).toBeGreaterThan(0);
      for (const { observer, report } of got) {
        const r = report as FailureReport;
        if (r.kind !== "partition" || sideOf(observer) === sideOf(r.subject))
          wrong.push(`seed ${seed}: ${observer} reported ${r.kind} of ${r.subject}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("a host crash (process and agent) under 2% loss is a host crash to everyone, over 200 seeds: the partition checks do not misfire", async () => {
    const wrong: string[] = [];
    let reported = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const { sim, seen } = await agentSim(["n1", "n2", "n3", "n4", "n5"], seed, { loss: 0.02 });
      sim.start();
      sim.runUntil(10_000);
      sim.crash("n3", { host: true });
      sim.runUntil(40_000);
      for (const { observer, report } of seen) {
        if (report.type !== "failure") continue;
        const r = report as FailureReport;
        if (r.kind === "host-crash" && r.subject.endsWith("3")) reported++;
        else wrong.push(`seed ${seed}: ${observer} reported ${r.kind} of ${r.subject}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(reported).toBeGreaterThan(200 * 8);
  });

  it("a hung process (paused, its agent answering) is a suspected process-exit, not a host crash", async () => {
    const { sim, seen, ids } = await agentSim(["n1", "n2", "n3", "n4"], 11);
    sim.start();
    sim.runUntil(5000);
    sim.pause("n3");
    sim.runUntil(60_000);
    const got = seen
      .filter((s) => s.report.type === "failure")
      .map((s) => ({ observer: s.observer, r: s.report as FailureReport }));
    expect(new Set(got.map((x) => x.observer))).toEqual(new Set(ids.filter((i) => i !== "n3")));
    for (const { r } of got)
      expect(r).toMatchObject({ subject: "n3", kind: "process-exit", certainty: "suspected" });
    expect(got.every(({ r }) => r.evidence.some((e) => e.what === "host agent agent:h3 answers"))).toBe(true);
  });

  it("swarm with agents: 300 seeds, a certain report never names a running incarnation", async () => {
    const { swimAgentsScenario } = await import("../../src/sim/scenarios/swim.ts");
    const r = await swarmInChunks(swimAgentsScenario, { seeds: 300, nodes: 5, durationMs: 120_000 });
    expect(r.failures).toEqual([]);
    expect(r.stats.certainReports).toBeGreaterThan(100);
  }, 300_000);

  it("swarm with leases and fences: 300 seeds, no certain report (host crashes included) names a life that can act", async () => {
    const { swimFencingScenario } = await import("../../src/sim/scenarios/swim.ts");
    const r = await swarmInChunks(swimFencingScenario, { seeds: 300, nodes: 5, durationMs: 120_000 });
    expect(r.failures).toEqual([]);
    expect(r.stats.certainHostCrashReports).toBeGreaterThan(100);
  }, 300_000);
});

describe("SwimCore ask (a ping outside the probe rotation)", () => {
  it("pings the member at once, and only its own ack comes out as a direct path", async () => {
    const { SwimCore } = await import("../../src/membership/swim-core.ts");
    const { createRng } = await import("../../src/runtime/rng.ts");
    const core = new SwimCore({ id: "a", rng: createRng(1), members: ["b", "c"] });
    core.step({ type: "start", now: 0 });
    const out = core.step({ type: "ask", now: 10, target: "b" });
    const ping = out.find((o) => o.type === "send" && o.to === "b" && o.msg.t === "ping");
    expect(ping).toBeDefined();
    const seq = (ping as { msg: { seq: number } }).msg.seq;
    // An ack with that seq from someone else is not b's answer.
    const forged = core.step({
      type: "message",
      now: 12,
      from: "c",
      msg: { p: "swim", t: "ack", seq, g: [] },
    });
    expect(forged.filter((o) => o.type === "path")).toEqual([]);
    const acked = core.step({
      type: "message",
      now: 13,
      from: "b",
      msg: { p: "swim", t: "ack", seq, g: [] },
    });
    expect(acked.filter((o) => o.type === "path")).toEqual([
      { type: "path", peer: "b", direct: true, rttMs: 3 },
    ]);
    // Asking about a stranger, or about itself, sends nothing.
    expect(core.step({ type: "ask", now: 20, target: "zz" })).toEqual([]);
    expect(core.step({ type: "ask", now: 20, target: "a" })).toEqual([]);
  });
});
