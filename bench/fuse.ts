// FUSE groups: steady-state traffic per node with 1 … 100,000 groups over 50 nodes (simulation),
// notification latency after a SIGKILL and after a signal on real processes over loopback, and
// creation latency for groups of 2 to 32 members. Run: npm run bench -- --only fuse
import { randomBytes } from "node:crypto";
import { runThree } from "../examples/fuse/three.ts";
import { DetectionNode } from "../src/detect/detection-node.ts";
import { FuseNode } from "../src/fuse/fuse-node.ts";
import { TcpTransport } from "../src/net/tcp-transport.ts";
import { realClock } from "../src/runtime/clock.ts";
import { createRng } from "../src/runtime/rng.ts";
import { type FuseSimNode, simFuseNode } from "../src/sim/scenarios/fuse.ts";
import { Simulation } from "../src/sim/simulation.ts";
import { fmt, summarize, table } from "./lib.ts";

/** 50 simulated nodes (memberlist timing), `groups` groups of 2–5 random members; traffic per node. */
function steadyState(groups: number): { msgsPerSec: number; bytesPerSec: number; live: number } {
  const nodes = 50;
  const sim = new Simulation<FuseSimNode>({
    seed: 7,
    nodes,
    traceFrames: false,
    create: (ctx) => simFuseNode(ctx, { seeds: [], members: ctx.nodes }),
  }).start();
  // Creation, spread over the first 20 s of virtual time.
  const rng = sim.rng;
  for (let i = 0; i < groups; i++) {
    sim.at((20_000 * i) / groups, "create", () => {
      const members = rng.shuffle([...sim.ids]).slice(0, 2 + rng.int(4));
      sim.node(members[0]!)!.fuse.createWith(members.slice(1), () => {});
    });
  }
  sim.runUntil(40_000);
  const before = sim.ids.map((id) => sim.transport(id).stats());
  const windowMs = 60_000;
  sim.runFor(windowMs);
  const after = sim.ids.map((id) => sim.transport(id).stats());
  let msgs = 0;
  let bytes = 0;
  for (let i = 0; i < nodes; i++) {
    msgs += after[i]!.sent - before[i]!.sent;
    bytes += after[i]!.bytesSent - before[i]!.bytesSent;
  }
  const live = new Set(sim.ids.flatMap((id) => sim.node(id)!.fuse.core.activeGroups())).size;
  sim.finish();
  return {
    msgsPerSec: msgs / nodes / (windowMs / 1000),
    bytesPerSec: bytes / nodes / (windowMs / 1000),
    live,
  };
}

/** Creation latency on loopback: `n` nodes in this process (TCP, SWIM at 200 ms), groups of `size`. */
async function creation(sizes: number[], rounds: number): Promise<Array<[number, number, number]>> {
  const n = Math.max(...sizes);
  const key = randomBytes(32);
  const ids = Array.from({ length: n }, (_, i) => `c${i + 1}`);
  const ts = await Promise.all(
    ids.map(async (id) => {
      const t = new TcpTransport({ id, clusterKey: key });
      await t.start();
      return t;
    }),
  );
  for (const t of ts) for (const u of ts) if (t !== u) t.addPeer(u.id, u.address());
  const nodes = ts.map((t, i) => {
    let fuse: FuseNode | undefined;
    const detection = new DetectionNode({
      id: t.id,
      clock: realClock,
      rng: createRng(i + 1),
      transport: t,
      members: ids,
      boot: t.boot,
      swim: { probeIntervalMs: 200, probeTimeoutMs: 100 },
      extension: (peer) => fuse?.digest(peer),
    });
    fuse = new FuseNode({ id: t.id, boot: t.boot, transport: t, clock: realClock, detection });
    detection.start();
    fuse.start();
    return { detection, fuse };
  });
  await new Promise((r) => setTimeout(r, 1000));
  const out: Array<[number, number, number]> = [];
  for (const size of sizes) {
    const lat: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      await nodes[0]!.fuse.create(ids.slice(1, size));
      lat.push(performance.now() - t0);
    }
    const s = summarize(lat);
    out.push([size, s.p50, s.p99]);
  }
  for (const x of nodes) {
    x.fuse.stop();
    x.detection.stop();
  }
  await Promise.all(ts.map((t) => t.stop()));
  return out;
}

export async function benchFuse(quick: boolean): Promise<string> {
  const parts: string[] = [];
  const counts = quick ? [1, 100, 10_000] : [1, 100, 10_000, 100_000];
  const rows: (string | number)[][] = [];
  let base: number | undefined;
  for (const g of counts) {
    const t0 = performance.now();
    const r = steadyState(g);
    base ??= r.bytesPerSec;
    rows.push([
      g,
      r.live,
      fmt(r.msgsPerSec, 2),
      fmt(r.bytesPerSec, 0),
      `${fmt((r.bytesPerSec / base - 1) * 100, 1)} %`,
      fmt((performance.now() - t0) / 1000, 1),
    ]);
  }
  parts.push(
    "Steady state, 50 simulated nodes, SWIM at memberlist's LAN timing (60 s window after creation settled):\n",
    table(
      ["groups", "live groups", "msgs/s per node", "bytes/s per node", "bytes vs 1 group", "wall s"],
      rows,
    ),
    `\nSWIM's own probe traffic is the same ${fmt(Number(rows[0]![2]), 2)} msgs/s per node; target: flat within 10 %.`,
  );
  const rounds = quick ? 3 : 10;
  const kill: number[] = [];
  const signal: number[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const n of (await runThree()).notifications) kill.push(n.afterMs);
    for (const n of (await runThree({ signal: true })).notifications) signal.push(n.afterMs);
  }
  const k = summarize(kill);
  const s = summarize(signal);
  parts.push(
    "\nNotification latency on real processes over loopback (three members, host agent; ms, wall-clock resolution):\n",
    table(
      ["cause", "samples", "p50 ms", "p99 ms"],
      [
        ["SIGKILL of a member (agent: process-exit, certain)", k.n, fmt(k.p50, 0), fmt(k.p99, 0)],
        ["signal by a member", s.n, fmt(s.p50, 0), fmt(s.p99, 0)],
      ],
    ),
  );
  const created = await creation(quick ? [2, 8] : [2, 4, 8, 16, 32], quick ? 5 : 20);
  parts.push(
    "\nCreation latency on loopback (members in one process over TCP; ms):\n",
    table(
      ["members", "p50 ms", "p99 ms"],
      created.map(([n, p50, p99]) => [n, fmt(p50, 2), fmt(p99, 2)]),
    ),
  );
  return parts.join("\n");
}
