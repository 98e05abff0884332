import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HostAgent } from "../../src/agent/host-agent.ts";
import { fencingConfig } from "../../src/agent/lease.ts";
import { DetectionNode } from "../../src/detect/detection-node.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import type { Address } from "../../src/net/transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { Processes, waitFor } from "../fixtures/processes.ts";

const KEY = randomBytes(32);
const FENCING = fencingConfig({
  witnesses: ["w1", "w2", "w3"],
  leaseMs: 1000,
  processLeaseMs: 400,
  marginMs: 50,
});
const SWIM = { probeIntervalMs: 200, probeTimeoutMs: 100 };

/** Real sockets and processes: three witnesses, a host agent with fencing on, a registered child. */
describe("leases and fences on real processes", () => {
  const procs = new Processes();
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    await procs.killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(host: string) {
    const dir = mkdtempSync(join(tmpdir(), "faultline-fence-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const witnesses: Array<{ node: DetectionNode; t: TcpTransport }> = [];
    for (const [i, id] of FENCING.witnesses.entries()) {
      const t = new TcpTransport({ id, clusterKey: KEY });
      await t.start();
      const node = new DetectionNode({
        id,
        clock: realClock,
        rng: createRng(i + 1),
        transport: t,
        address: t.address(),
        learnAddress: (peer, addr) => t.addPeer(peer, addr),
        swim: SWIM,
        fencing: FENCING,
      });
      witnesses.push({ node, t });
      cleanups.push(async () => {
        node.stop();
        await t.stop();
      });
    }
    const addrs: Record<string, Address> = {};
    for (const w of witnesses) addrs[w.node.id] = w.t.address();
    for (const w of witnesses) {
      for (const [id, a] of Object.entries(addrs)) if (id !== w.node.id) w.t.addPeer(id, a);
      w.node.start();
    }
    const fenced: string[] = [];
    const socketPath = join(dir, "agent.sock");
    const agent = new HostAgent({
      host,
      socketPath,
      clusterKey: KEY,
      swim: SWIM,
      fencing: FENCING,
      onFenced: (why) => fenced.push(why),
    });
    await agent.start();
    cleanups.push(() => agent.stop());
    agent.join(addrs);
    const child = await procs.startTs<{ pid: number }>("test/fixtures/agent-node.ts", [
      `${host}-p`,
      KEY.toString("hex"),
      agent.id,
      socketPath,
    ]);
    // The witnesses grant nothing for one fence bound after they start; then the agent holds.
    await waitFor(() => agent.holdsLease(), "the agent's cluster lease", 15_000);
    await new Promise((r) => setTimeout(r, 300)); // a few process-lease renewals
    return { agent, child, witnesses, fenced };
  }

  it("an agent cut off from its witnesses SIGKILLs its registered processes when its lease ends", async () => {
    const { agent, child, witnesses, fenced } = await setup("hf1");
    const exited = new Promise<NodeJS.Signals | null>((r) => child.proc.once("exit", (_c, s) => r(s)));
    for (const w of witnesses) await w.t.stop(); // the witnesses are gone: no renewal can succeed
    await waitFor(() => fenced.length > 0, "the agent to fence itself", 5000);
    expect(fenced[0]).toMatch(/cluster lease (expired|fenced)/);
    expect(await exited).toBe("SIGKILL");
    expect(agent.holdsLease()).toBe(false);
  });

  it("a process whose agent is gone stops itself (exit code 75) when its process lease ends", async () => {
    const { agent, child } = await setup("hf2");
    const exited = new Promise<number | null>((r) => child.proc.once("exit", (c) => r(c)));
    await agent.stop(); // the agent vanishes: nobody renews the process's lease
    expect(await exited).toBe(75);
  });
});
