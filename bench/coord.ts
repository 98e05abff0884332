/**
 * The coordination service beside a real etcd and a real ZooKeeper, same machine, same run (the
 * bench installs both with apt-get when they are missing):
 * - failover: a client connected beforehand; SIGKILL (or SIGSTOP) the leader; the time until the
 *   first acknowledged write (ZooKeeper measured the same way with its own client, bench/zk.ts);
 * - replication: 100-byte writes on 3 members, latency p50/p99 at one writer and throughput with
 *   many, with sync durability (and faultline's in-memory mode beside it), and faultline's Raft
 *   path alone — a writer in the leader's process — beside the floors.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { etcdProto } from "../src/coord/etcd-wire.ts";
import { CoordNode } from "../src/coord/node.ts";
import {
  type Cluster,
  ensureInstalled,
  have,
  startEtcd,
  startFaultline,
  startZooKeeper,
  ZK_SERVER,
} from "./clusters.ts";
import { fmt, rawFrames, startHelper, stopHelper, summarize, table } from "./lib.ts";
import { zkFailover } from "./zk.ts";

// biome-ignore lint/suspicious/noExplicitAny: generated gRPC stubs are untyped
type Stub = any;

const pb = etcdProto();

/** The busy-poll budget of the rows that measure it (`--busy-poll`, CoordNode's `busyPollMs`). */
const BUSY_POLL_MS = 2;

/** A plain etcd v3 client on one endpoint (the same for faultline and etcd). */
export class Client {
  readonly kv: Stub;
  readonly maint: Stub;
  constructor(readonly endpoint: string) {
    this.kv = new pb.KV(endpoint, grpc.credentials.createInsecure());
    this.maint = new pb.Maintenance(endpoint, grpc.credentials.createInsecure());
  }
  put(key: string, value: Buffer, deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.kv.Put(
        { key: Buffer.from(key), value },
        { deadline: Date.now() + deadlineMs },
        (e: Error | null) => (e ? reject(e) : resolve()),
      ),
    );
  }
  status(deadlineMs = 500): Promise<{ member: string; leader: string }> {
    return new Promise((resolve, reject) =>
      this.maint.Status({}, { deadline: Date.now() + deadlineMs }, (e: Error | null, r: Stub) =>
        e ? reject(e) : resolve({ member: String(r.header.member_id), leader: String(r.leader) }),
      ),
    );
  }
  close(): void {
    this.kv.close();
    this.maint.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until every member answers and names the same leader; return the leader's index. */
export async function stableLeader(clients: Client[], withinMs = 30_000): Promise<number> {
  const until = Date.now() + withinMs;
  while (Date.now() < until) {
    try {
      const st = await Promise.all(clients.map((c) => c.status()));
      const leader = st[0]!.leader;
      if (leader !== "0" && st.every((s) => s.leader === leader)) {
        const i = st.findIndex((s) => s.member === leader);
        if (i >= 0) {
          await clients[i]!.put("bench/ready", Buffer.from("1"), 2000);
          return i;
        }
      }
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error("no stable leader within 30 s");
}

async function failover(c: Cluster, fault: "SIGKILL" | "SIGSTOP", rounds: number): Promise<number[]> {
  const clients = c.endpoints.map((e) => new Client(e));
  const out: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const li = await stableLeader(clients);
      await sleep(300);
      const victim = c.members[li]!;
      const others = clients.filter((_, i) => i !== li);
      const t0 = performance.now(); // real-io: a benchmark measures wall time
      victim.proc.kill(fault);
      for (let k = 0; ; k++) {
        try {
          await others[k % others.length]!.put("bench/failover", Buffer.from(String(r)), 100);
          out.push(performance.now() - t0); // real-io: a benchmark measures wall time
          break;
        } catch {
          if (performance.now() - t0 > 20_000)
            throw new Error(`${c.kind}: no write acknowledged 20 s after ${fault}`); // real-io
        }
      }
      if (fault === "SIGKILL") victim.restart();
      else victim.proc.kill("SIGCONT");
    }
    await stableLeader(clients);
  } finally {
    for (const cl of clients) cl.close();
  }
  return out;
}

/** Puts one at a time (latency, µs), then from 64 writers at once (writes/s), `ms` in all. */
async function putLoad(
  put: (key: string) => Promise<unknown>,
  ms: number,
  round: number,
  lat: number[] = [],
  latencyOnly = false,
): Promise<{ lat: number[]; opsPerSec: number }> {
  const until = performance.now() + ms / 2; // real-io
  for (let i = 0; performance.now() < until; i++) {
    const t = performance.now(); // real-io
    await put(`bench/lat/${round}/${i % 1000}`);
    lat.push((performance.now() - t) * 1000); // real-io
  }
  if (latencyOnly) return { lat, opsPerSec: Number.NaN };
  let done = 0;
  const start = performance.now(); // real-io
  const end = start + ms / 2;
  await Promise.all(
    Array.from({ length: 64 }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        await put(`bench/tp/${w}/${i % 100}`);
        done++;
      }
    }),
  );
  return { lat, opsPerSec: done / ((performance.now() - start) / 1000) }; // real-io
}

/** Puts of 100 bytes to one endpoint through the gRPC client (see putLoad). */
async function writes(
  endpoint: string,
  ms: number,
  round: number,
): Promise<{ lat: number[]; opsPerSec: number }> {
  const cl = new Client(endpoint);
  try {
    const value = Buffer.alloc(100, 0x61);
    return await putLoad((key) => cl.put(key, value, 5000), ms, round);
  } finally {
    cl.close();
  }
}

/** A table row: latency samples pooled (p50, p99), throughput as the median round and each round. */
function row(name: string, durability: string, lat: number[], tp: number[]): (string | number)[] {
  const s = summarize(lat.sort((a, b) => a - b));
  const runs = tp.sort((a, b) => a - b);
  return [
    name,
    durability,
    fmt(s.p50, 0),
    fmt(s.p99, 0),
    runs.length ? fmt(runs[Math.floor(runs.length / 2)]!, 0) : "—",
    runs.length ? runs.map((x) => fmt(x, 0)).join(" ") : "—",
  ];
}

interface Target {
  name: string;
  durability: string;
  /** The endpoint writes go to (a cluster's leader). */
  endpoint: () => Promise<string>;
}

/**
 * Every target in turn, `rounds` times over (so that a quiet or a busy stretch of this shared
 * machine falls on all of them alike): latency samples pooled, throughput as the median round.
 */
async function replication(
  targets: Target[],
  seconds: number,
  rounds: number,
): Promise<(string | number)[][]> {
  const lat = targets.map(() => [] as number[]);
  const tp = targets.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (const [i, t] of targets.entries()) {
      const w = await writes(await t.endpoint(), (seconds * 1000) / rounds, r);
      lat[i]!.push(...w.lat);
      tp[i]!.push(w.opsPerSec);
    }
  }
  return targets.map((t, i) => row(t.name, t.durability, lat[i]!, tp[i]!));
}

/**
 * The replication path without gRPC: c1 hosted in this process (a `CoordNode` without a gRPC
 * server, as an application embeds a member), c2 and c3 as `faultline coord` processes with a long
 * fallback election timeout so that c1 leads; puts through c1's `CoordMember`, one at a time
 * (latency) and from 64 writers (throughput) — what the Raft path costs, with no client round trip.
 * With `busyPollMs` every member busy-polls, and — as polling wants a core of its own — this
 * process (the leader and its writers) runs on CPU 0 and the two followers share CPU 1.
 */
async function hostedWrites(
  durability: "sync" | "memory",
  seconds: number,
  rounds: number,
  busyPollMs = 0,
): Promise<(string | number)[]> {
  const c = await startFaultline({
    durability,
    hostedHere: ["c1"],
    electionTimeout: "5s",
    ...(busyPollMs ? { busyPoll: `${busyPollMs}ms` } : {}),
  });
  const dir = mkdtempSync(join(tmpdir(), "faultline-hosted-"));
  let node: CoordNode | undefined;
  // This process's CPUs before pinning, to give back after; none: the row runs unpinned (fewer
  // than 2 CPUs, or no taskset) and says so.
  const mine = busyPollMs && availableParallelism() >= 2 ? cpuList(process.pid) : undefined;
  try {
    if (mine) pinCpus([[process.pid, "0"], ...c.members.map((m) => [m.proc.pid!, "1"] as [number, string])]);
    node = await CoordNode.start({
      id: "c1",
      members: c.peers!,
      clusterKey: Buffer.from(c.keyHex!, "hex"),
      durability,
      data: join(dir, "c1"),
      clientPort: false,
      busyPollMs,
    });
    const m = node.member;
    const until = performance.now() + 20_000; // real-io
    while (m.raft.core.role !== "leader") {
      if (performance.now() > until) throw new Error("the hosted member did not become leader in 20 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    const value = "a".repeat(100);
    const put = (key: string) => m.write({ c: "put", req: { key, value } });
    const lat: number[] = [];
    const tp: number[] = [];
    let failed = "";
    for (let r = 0; r < rounds && !failed; r++) {
      if (busyPollMs) {
        // One writer only: busy-polling is for latency, and it wants a core a member, which 64
        // writers in the leader's process do not leave it. A lost leadership ends the row (see
        // docs/BENCHMARKS.md: with the leader's process on one core it has happened).
        await putLoad(put, (seconds * 1000) / rounds, r, lat, true).catch((e: unknown) => {
          failed = `; stopped after ${lat.length} writes: ${(e as Error).message}`;
        });
        continue;
      }
      const w = await putLoad(put, (seconds * 1000) / rounds, r);
      lat.push(...w.lat);
      tp.push(w.opsPerSec);
    }
    return row(
      `faultline, writer in the leader's process (no gRPC)${busyPollMs ? `, busy-poll ${busyPollMs} ms${mine ? ", leader on CPU 0, followers on CPU 1" : " (not pinned)"}, one writer${failed}` : ""}`,
      durability === "sync" ? "sync (LMDB)" : "memory",
      lat,
      tp,
    );
  } finally {
    try {
      await node?.stop();
    } finally {
      if (mine) pinCpus([[process.pid, mine]]);
      await c.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

/** Pin each process (all its threads) to a CPU list with taskset. */
function pinCpus(pins: Array<[number, string]>): void {
  for (const [pid, cpus] of pins)
    execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/** A process's CPU list as taskset prints it ("0,1" or "0-3"); undefined without taskset. */
function cpuList(pid: number): string | undefined {
  if (!have("taskset")) return undefined;
  const out = execFileSync("taskset", ["-c", "-p", String(pid)], { encoding: "utf8" });
  return /list:\s*(\S+)/.exec(out)?.[1];
}

async function leaderOf(c: Cluster): Promise<string> {
  const clients = c.endpoints.map((e) => new Client(e));
  try {
    return c.endpoints[await stableLeader(clients)]!;
  } finally {
    for (const cl of clients) cl.close();
  }
}

/**
 * The floor under any replicated write's latency here: a client's round trip to the leader plus
 * the leader's round trip to a follower, each as raw node:net with a 4-byte length prefix and
 * nothing else, between processes on this machine (p50/p99 µs of the two in sequence).
 */
async function rawFloor(n: number): Promise<{ p50: number; p99: number }> {
  const echo = await startHelper<{ port: number }>("bench/echo-peer.ts", ["raw"]);
  const s = connect({ host: "127.0.0.1", port: echo.info.port });
  try {
    await new Promise<void>((r) => s.once("connect", () => r()));
    s.setNoDelay(true);
    let answered = () => {};
    s.on(
      "data",
      rawFrames(() => answered()),
    );
    const frame = Buffer.alloc(4 + 1 + 100, 0x61);
    frame.writeUInt32BE(101, 0);
    frame[4] = 1; // echo
    const roundTrip = () =>
      new Promise<void>((r) => {
        answered = r;
        s.write(frame);
      });
    const out: number[] = [];
    for (let i = 0; i < n + 200; i++) {
      const t = performance.now(); // real-io
      await roundTrip();
      await roundTrip();
      if (i >= 200) out.push((performance.now() - t) * 1000); // real-io
    }
    return summarize(out.sort((a, b) => a - b));
  } finally {
    s.destroy();
    await stopHelper(echo.proc);
  }
}

export async function benchCoord(quick: boolean, replicationOnly = false): Promise<string> {
  const noEtcd = ensureInstalled("etcd", ["etcd-server", "etcd-client"]);
  if (noEtcd) return `(skipped: ${noEtcd})`;
  const noZk = ensureInstalled(ZK_SERVER, ["zookeeper"]);
  const rounds = replicationOnly ? 0 : quick ? 5 : 20;
  const rows: (string | number)[][] = [];
  const repl: (string | number)[][] = [];
  // One after another, each up (its ports bound) before the next picks free ports.
  const fl = await startFaultline({ durability: "sync", agent: true });
  await leaderOf(fl);
  const mem = await startFaultline({ durability: "memory", agent: false });
  await leaderOf(mem);
  const et = await startEtcd();
  await leaderOf(et);
  const echo = await startHelper<{ port: number }>("bench/echo-peer.ts", ["grpc"]);
  try {
    // Failover, one system at a time (the others idle).
    for (const [c, name] of [
      [fl, "faultline (agent + detector-driven failover)"],
      [et, "etcd 3.4 (defaults: heartbeat 100 ms, election 1 s)"],
    ] as const) {
      for (const fault of rounds ? (["SIGKILL", "SIGSTOP"] as const) : []) {
        const s = summarize((await failover(c, fault, rounds)).sort((a, b) => a - b));
        rows.push([name, fault, fmt(s.p50), fmt(s.p99), s.n]);
      }
    }
    repl.push(
      ...(await replication(
        [
          { name: "faultline", durability: "sync (LMDB)", endpoint: () => leaderOf(fl) },
          { name: "faultline", durability: "memory", endpoint: () => leaderOf(mem) },
          { name: "etcd 3.4", durability: "sync (bbolt + WAL fsync)", endpoint: () => leaderOf(et) },
          {
            name: "floor: gRPC echo (grpc-js, Put answered at once)",
            durability: "—",
            endpoint: async () => `127.0.0.1:${echo.info.port}`,
          },
        ],
        quick ? 4 : 18,
        quick ? 2 : 3,
      )),
    );
  } finally {
    await stopHelper(echo.proc);
    await Promise.all([fl.stop(), mem.stop(), et.stop()]);
  }
  for (const [d, poll] of [
    ["memory", 0],
    ["memory", BUSY_POLL_MS],
    ["sync", 0],
  ] as const)
    repl.push(await hostedWrites(d, quick ? 4 : 12, quick ? 2 : 3, poll));
  const floor = await rawFloor(quick ? 500 : 5000);
  repl.push(["floor: 2 raw TCP round trips", "—", fmt(floor.p50, 0), fmt(floor.p99, 0), "—", "—"]);
  if (rounds && noZk) rows.push([`ZooKeeper: skipped (${noZk})`, "—", "—", "—", 0]);
  else if (rounds) {
    const zk = await startZooKeeper();
    try {
      for (const fault of ["SIGKILL", "SIGSTOP"] as const) {
        const s = summarize((await zkFailover(zk, fault, rounds)).sort((a, b) => a - b));
        rows.push([
          "ZooKeeper 3.8 (shipped defaults: tickTime 2 s, syncLimit 5)",
          fault,
          fmt(s.p50),
          fmt(s.p99),
          s.n,
        ]);
      }
    } finally {
      await zk.stop();
    }
  }
  return [
    "Failover: SIGKILL or SIGSTOP of the leader → first acknowledged write (ms), 3 members on loopback, a client connected beforehand",
    "",
    table(["system", "fault", "p50 ms", "p99 ms", "rounds"], rows),
    "",
    "Replication: 100-byte puts to the leader, 3 members; latency at one writer (µs), throughput with 64 writers (median of the rounds, and each round); the systems take turns",
    "",
    table(["system", "durability", "p50 µs", "p99 µs", "writes/s", "rounds"], repl),
  ].join("\n");
}
