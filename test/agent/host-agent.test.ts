import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ExitWatch } from "../../src/agent/exit-watch.ts";
import { HostAgent } from "../../src/agent/host-agent.ts";
import { procExiting, procGone, procIdentity } from "../../src/agent/proc.ts";
import { DetectionNode } from "../../src/detect/detection-node.ts";
import type { FailureReport, ReportEvent } from "../../src/detect/report.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { silentLogger } from "../../src/runtime/logger.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { Processes, waitFor } from "../fixtures/processes.ts";

const KEY = randomBytes(32);

describe("host agent on real processes", () => {
  const procs = new Processes();
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    await procs.killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("/proc identity: a live pid, a dead pid, and no confusion with a recycled pid", () => {
    const me = procIdentity(process.pid)!;
    expect(me.pid).toBe(process.pid);
    expect(procGone(me)).toBe(false);
    expect(procIdentity(2 ** 22 + 12345)).toBeUndefined();
    expect(procGone({ pid: process.pid, startTime: "1" })).toBe(true); // same pid, another start time
    expect(procExiting(me)).toBe(false); // running threads are not in do_exit
    expect(procExiting({ pid: process.pid, startTime: "1" })).toBe(true); // not our process: gone
  });

  // CI runs as root on Linux, where the kernel's taskstats notices must work: a broken helper fails here.
  const kernelNotices = process.platform === "linux" && process.getuid?.() === 0;

  it.runIf(kernelNotices)(
    "a killed process's exit is certain from the kernel's notice, not after its memory is freed",
    async () => {
      const w = await ExitWatch.start(silentLogger());
      expect(w, "exitwatch could not start (see the agent's log line for why)").toBeDefined();
      await w!.stop();

      const dir = mkdtempSync(join(tmpdir(), "faultline-agent-"));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const socketPath = join(dir, "agent.sock");
      const agent = new HostAgent({ host: "h3", socketPath, clusterKey: KEY });
      await agent.start();
      cleanups.push(() => agent.stop());
      agent.join({});
      const seen: ReportEvent[] = [];
      agent.detection!.monitor.subscribe({}, (r) => seen.push(r));
      // 512 MiB to free: the kernel closes the victim's sockets only after ~50 ms of teardown.
      const victim = await procs.startTs<{ pid: number }>("test/fixtures/agent-node.ts", [
        "n7",
        KEY.toString("hex"),
        agent.id,
        socketPath,
        "512",
      ]);
      await waitFor(() => agent.processes().includes("n7"), "n7 to register");
      victim.proc.kill("SIGKILL");
      await waitFor(() => seen.some((r) => r.type === "failure"), "the exit report");
      const r = seen.find((x) => x.type === "failure") as FailureReport;
      expect(r).toMatchObject({ subject: "n7", kind: "process-exit", certainty: "certain" });
      expect(r.evidence[0]!.what).toMatch(/kernel exit notice/);
      await Processes.exited(victim.proc);
      await new Promise((res) => setTimeout(res, 50)); // the socket's close comes after: no second report
      expect(seen.filter((x) => x.type === "failure")).toHaveLength(1);
    },
  );

  it("SIGKILL of a registered process is reported by every observer as process-exit, certain, within milliseconds", async () => {
    const dir = mkdtempSync(join(tmpdir(), "faultline-agent-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socketPath = join(dir, "agent.sock");
    const agent = new HostAgent({ host: "h1", socketPath, clusterKey: KEY });
    await agent.start();
    cleanups.push(() => agent.stop());

    // Two observers in this process, members of the same cluster as the agent.
    const observers: Array<{
      node: DetectionNode;
      t: TcpTransport;
      seen: Array<{ at: number; r: ReportEvent }>;
    }> = [];
    for (const id of ["o1", "o2"]) {
      const t = new TcpTransport({ id, clusterKey: KEY });
      await t.start();
      const node = new DetectionNode({
        id,
        clock: realClock,
        rng: createRng(id === "o1" ? 1 : 2),
        transport: t,
        seeds: [agent.id],
        address: t.address(),
        learnAddress: (peer, addr) => t.addPeer(peer, addr),
        swim: { probeIntervalMs: 200, probeTimeoutMs: 100 },
      });
      t.addPeer(agent.id, agent.cluster.address());
      const seen: Array<{ at: number; r: ReportEvent }> = [];
      node.monitor.subscribe({}, (r) => seen.push({ at: performance.now(), r }));
      node.start();
      observers.push({ node, t, seen });
      cleanups.push(async () => {
        node.stop();
        await t.stop();
      });
    }
    agent.join({ o1: observers[0]!.t.address(), o2: observers[1]!.t.address() });
    await waitFor(
      () =>
        observers.every((o) => o.node.swim.members().some((m) => m.id === agent.id && m.status === "alive")),
      "observers to see the agent",
    );

    const victim = await procs.startTs<{ pid: number }>("test/fixtures/agent-node.ts", [
      "n9",
      KEY.toString("hex"),
      agent.id,
      socketPath,
    ]);
    await waitFor(() => agent.processes().includes("n9"), "n9 to register");
    const killedAt = performance.now();
    victim.proc.kill("SIGKILL");
    await waitFor(
      () => observers.every((o) => o.seen.some((s) => s.r.type === "failure")),
      "certain reports",
    );
    for (const o of observers) {
      const f = o.seen.find((s) => s.r.type === "failure")!;
      const r = f.r as FailureReport;
      expect(r.subject).toBe("n9");
      expect(r.kind).toBe("process-exit");
      expect(r.certainty).toBe("certain");
      expect(r.evidence[0]!.source).toBe("agent");
      expect(f.at - killedAt).toBeLessThan(1000); // a loose bound for a loaded CI machine; the bench measures it
    }
    expect(agent.processes()).not.toContain("n9");
  });

  it("a process that unregisters and exits on purpose is not reported", async () => {
    const dir = mkdtempSync(join(tmpdir(), "faultline-agent-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socketPath = join(dir, "agent.sock");
    const agent = new HostAgent({ host: "h2", socketPath, clusterKey: KEY });
    await agent.start();
    cleanups.push(() => agent.stop());
    const seen: ReportEvent[] = [];
    agent.join({});
    agent.detection!.monitor.subscribe({}, (r) => seen.push(r));
    const p = await procs.startTs<{ pid: number }>("test/fixtures/agent-node.ts", [
      "n8",
      KEY.toString("hex"),
      agent.id,
      socketPath,
    ]);
    await waitFor(() => agent.processes().includes("n8"), "n8 to register");
    p.proc.kill("SIGTERM");
    await Processes.exited(p.proc);
    await waitFor(() => !agent.processes().includes("n8"), "n8 to be forgotten");
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.filter((r) => r.type === "failure")).toEqual([]);
  });
});
