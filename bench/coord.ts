/**
 * The coordination service beside a real etcd and a real ZooKeeper, same machine, same run (the
 * bench installs both with apt-get when they are missing):
 * - failover: a client connected beforehand; SIGKILL (or SIGSTOP) the leader; the time until the
 *   first acknowledged write (ZooKeeper measured the same way with its own client, bench/zk.ts);
 * - replication: 100-byte writes on 3 members, latency p50/p99 at one writer and throughput with
 *   many, with sync durability (and faultline's in-memory mode beside it).
 */
import { connect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { etcdProto } from "../src/coord/grpc-server.ts";
import {
  type Cluster,
  ensureInstalled,
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

async function replication(
  c: Cluster,
  seconds: number,
): Promise<{ p50: number; p99: number; opsPerSec: number }> {
  const clients = c.endpoints.map((e) => new Client(e));
  try {
    const li = await stableLeader(clients);
    const leader = clients[li]!;
    const value = Buffer.alloc(100, 0x61);
    // Latency: one writer, one write at a time, to the leader.
    const lat: number[] = [];
    const until = performance.now() + seconds * 500; // real-io
    for (let i = 0; performance.now() < until; i++) {
      const t = performance.now(); // real-io
      await leader.put(`bench/lat/${i % 1000}`, value, 5000);
      lat.push((performance.now() - t) * 1000); // real-io
    }
    // Throughput: 64 writers in flight.
    let done = 0;
    const end = performance.now() + seconds * 500; // real-io
    await Promise.all(
      Array.from({ length: 64 }, async (_, w) => {
        for (let i = 0; performance.now() < end; i++) {
          await leader.put(`bench/tp/${w}/${i % 100}`, value, 5000);
          done++;
        }
      }),
    );
    const s = summarize(lat.sort((a, b) => a - b));
    return { p50: s.p50, p99: s.p99, opsPerSec: done / (seconds / 2) };
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
  const fl = await startFaultline({ durability: "sync", agent: true });
  try {
    for (const fault of rounds ? (["SIGKILL", "SIGSTOP"] as const) : []) {
      const s = summarize((await failover(fl, fault, rounds)).sort((a, b) => a - b));
      rows.push(["faultline (agent + detector-driven failover)", fault, fmt(s.p50), fmt(s.p99), s.n]);
    }
    const r = await replication(fl, quick ? 2 : 6);
    repl.push(["faultline", "sync (LMDB)", fmt(r.p50, 0), fmt(r.p99, 0), fmt(r.opsPerSec, 0)]);
  } finally {
    await fl.stop();
  }
  const mem = await startFaultline({ durability: "memory", agent: false });
  try {
    const r = await replication(mem, quick ? 2 : 6);
    repl.push(["faultline", "memory", fmt(r.p50, 0), fmt(r.p99, 0), fmt(r.opsPerSec, 0)]);
  } finally {
    await mem.stop();
  }
  const floor = await rawFloor(quick ? 500 : 5000);
  repl.push(["floor: 2 raw TCP round trips", "—", fmt(floor.p50, 0), fmt(floor.p99, 0), "—"]);
  const et = await startEtcd();
  try {
    for (const fault of rounds ? (["SIGKILL", "SIGSTOP"] as const) : []) {
      const s = summarize((await failover(et, fault, rounds)).sort((a, b) => a - b));
      rows.push(["etcd 3.4 (defaults: heartbeat 100 ms, election 1 s)", fault, fmt(s.p50), fmt(s.p99), s.n]);
    }
    const r = await replication(et, quick ? 2 : 6);
    repl.push(["etcd 3.4", "sync (bbolt + WAL fsync)", fmt(r.p50, 0), fmt(r.p99, 0), fmt(r.opsPerSec, 0)]);
  } finally {
    await et.stop();
  }
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
    "Replication: 100-byte puts to the leader, 3 members; latency at one writer (µs), throughput with 64 writers",
    "",
    table(["system", "durability", "p50 µs", "p99 µs", "writes/s"], repl),
  ].join("\n");
}
