// Detection latency after SIGKILL of a process, on loopback, measured in one run for:
//  - faultline's host agent (certain process-exit, delivered to observers over the cluster);
//  - a plain TCP connection to the process (Linux default keepalive, and aggressive keepalive +
//    TCP_USER_TIMEOUT: on loopback the kernel closes a killed process's sockets, so both see the
//    end at once — but only as an untyped "connection closed", and nothing at all on a host crash);
//  - SWIM alone with memberlist's LAN defaults (1 s probe, 500 ms timeout, suspicion multiplier 4).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HostAgent } from "../src/agent/host-agent.ts";
import { DetectionNode } from "../src/detect/detection-node.ts";
import { TcpTransport } from "../src/net/tcp-transport.ts";
import { realClock } from "../src/runtime/clock.ts";
import { createRng } from "../src/runtime/rng.ts";
import { fmt, startHelper, stopHelper, summarize, table } from "./lib.ts";

const KEY = randomBytes(32);
const PEER = "bench/detect-peer.ts";

/**
 * Wait for `cond`, looking every millisecond. Samples are stamped by the observers' own callbacks,
 * not here, so this loop's pace does not enter the figures; it must not spin either: a busy
 * measuring process would take one of the two cores the victim's teardown, the agent and its
 * helper need.
 */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}

interface Observer {
  node: DetectionNode;
  t: TcpTransport;
  firstFailure: Map<string, number>;
}

async function observers(
  ids: string[],
  swim: ConstructorParameters<typeof DetectionNode>[0]["swim"],
): Promise<Observer[]> {
  const out: Observer[] = [];
  for (const [i, id] of ids.entries()) {
    const t = new TcpTransport({ id, clusterKey: KEY });
    await t.start();
    const node = new DetectionNode({
      id,
      clock: realClock,
      rng: createRng(i + 1),
      transport: t,
      seeds: ids.filter((x) => x !== id),
      address: t.address(),
      learnAddress: (peer, addr) => t.addPeer(peer, addr),
      ...(swim ? { swim } : {}),
    });
    const firstFailure = new Map<string, number>();
    node.monitor.subscribe({ recovered: false }, (r) => {
      if (!firstFailure.has(r.subject)) firstFailure.set(r.subject, performance.now());
    });
    out.push({ node, t, firstFailure });
  }
  for (const o of out) for (const p of out) if (o !== p) o.t.addPeer(p.node.id, p.t.address());
  for (const o of out) o.node.start();
  return out;
}

async function stopAll(obs: Observer[]): Promise<void> {
  for (const o of obs) o.node.stop();
  await Promise.all(obs.map((o) => o.t.stop()));
}

async function benchAgent(rounds: number): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-bench-"));
  const socketPath = join(dir, "agent.sock");
  const agent = new HostAgent({ host: "bench", socketPath, clusterKey: KEY });
  await agent.start();
  const obs = await observers(["o1", "o2", "o3"], { probeIntervalMs: 1000, probeTimeoutMs: 500 });
  agent.join(Object.fromEntries(obs.map((o) => [o.node.id, o.t.address()])));
  await until(() => obs.every((o) => o.node.swim.members().some((m) => m.id === agent.id)), 10_000);
  const samples: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const id = `v${i}`;
      const v = await startHelper<{ pid: number }>(PEER, [
        "agent",
        id,
        KEY.toString("hex"),
        agent.id,
        socketPath,
      ]);
      await until(() => agent.processes().includes(id), 5000);
      const t0 = performance.now();
      v.proc.kill("SIGKILL");
      await until(() => obs.every((o) => o.firstFailure.has(id)), 5000);
      for (const o of obs) samples.push((o.firstFailure.get(id) ?? Number.NaN) - t0);
      await stopHelper(v.proc);
    }
  } finally {
    await stopAll(obs);
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return samples;
}

async function benchTcp(rounds: number, aggressive: boolean): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const v = await startHelper<{ port: number }>(PEER, ["tcp", "v", KEY.toString("hex")]);
    const s = connect({ host: "127.0.0.1", port: v.info.port });
    await new Promise<void>((r) => s.once("connect", () => r()));
    if (aggressive) {
      s.setKeepAlive(true, 1000);
      // TCP_USER_TIMEOUT is not exposed by node:net; keepalive at 1 s is the aggressive setting here.
    } else {
      s.setKeepAlive(true); // Linux defaults: 7200 s idle, 75 s interval, 9 probes
    }
    let endedAt: number | undefined;
    s.on("close", () => {
      endedAt ??= performance.now();
    });
    s.on("error", () => {
      endedAt ??= performance.now();
    });
    const t0 = performance.now();
    v.proc.kill("SIGKILL");
    await until(() => endedAt !== undefined, 5000);
    samples.push((endedAt ?? Number.NaN) - t0);
    s.destroy();
    await stopHelper(v.proc);
  }
  return samples;
}

async function benchSwim(rounds: number): Promise<number[]> {
  const obs = await observers(["s1", "s2", "s3", "s4"], {});
  const seeds = JSON.stringify(Object.fromEntries(obs.map((o) => [o.node.id, o.t.address()])));
  const samples: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const id = `w${i}`;
      const v = await startHelper<{ pid: number }>(PEER, ["swim", id, KEY.toString("hex"), seeds]);
      await until(() => obs.every((o) => o.node.swim.core.member(id)?.status === "alive"), 15_000);
      await new Promise((r) => setTimeout(r, 1500));
      const t0 = performance.now();
      v.proc.kill("SIGKILL");
      await until(() => obs.every((o) => o.firstFailure.has(id)), 60_000);
      for (const o of obs) samples.push((o.firstFailure.get(id) ?? Number.NaN) - t0);
      await stopHelper(v.proc);
    }
  } finally {
    await stopAll(obs);
  }
  return samples;
}

export async function benchDetect(quick = false): Promise<string> {
  const agent = summarize(await benchAgent(quick ? 5 : 30));
  const tcpDefault = summarize(await benchTcp(quick ? 5 : 20, false));
  const tcpAggressive = summarize(await benchTcp(quick ? 5 : 20, true));
  const swim = summarize(await benchSwim(quick ? 1 : 5));
  const row = (name: string, s: ReturnType<typeof summarize>, what: string) => [
    name,
    s.n,
    fmt(s.p50, 2),
    fmt(s.p99, 2),
    what,
  ];
  return [
    "Detection latency after SIGKILL of a process on loopback (ms), per observer:",
    "",
    table(
      ["mechanism", "samples", "p50", "p99", "what the application learns"],
      [
        row("faultline host agent", agent, "process-exit, certain, pushed to every member"),
        row(
          "TCP, keepalive at Linux defaults",
          tcpDefault,
          "'connection closed' (untyped; only a connected peer)",
        ),
        row("TCP, keepalive 1 s", tcpAggressive, "'connection closed' (untyped; only a connected peer)"),
        row("SWIM, memberlist LAN defaults", swim, "member dead (suspected), via suspicion timeout"),
      ],
    ),
  ].join("\n");
}
