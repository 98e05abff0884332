// Round-trip latency and one-way throughput of faultline's TCP transport beside raw node:net with
// minimal framing, measured in the same run against the same echo process.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { cpus } from "node:os";
import { TcpTransport } from "../src/net/tcp-transport.ts";

import { ACK_EVERY, fmt, rawFrames, startHelper, stopHelper, summarize, table } from "./lib.ts";

const KEY = randomBytes(32);
const ROUNDS = 8;
/** Messages in flight for throughput runs: 4096 small ones, 1024 of 4 KiB (well inside the queue bound). */
const windowFor = (size: number) => (size <= 256 ? 4096 : 1024);

interface Endpoint {
  /** Send one message; kind 1 = echo, 2 = sink, 4 = reset the sink's count. */
  send(kind: 1 | 2 | 4, payload: Buffer): void;
  /** Called for each echo, and with the count for each ack. */
  onEcho(fn: () => void): void;
  onAck(fn: (n: number) => void): void;
  close(): Promise<void>;
}

async function rawEndpoint(port: number, batched: boolean): Promise<Endpoint> {
  const s: Socket = await new Promise((resolve, reject) => {
    const c = connect({ host: "127.0.0.1", port }, () => resolve(c));
    c.once("error", reject);
  });
  s.setNoDelay(true);
  let echo = () => {};
  let ack = (_n: number) => {};
  s.on(
    "data",
    rawFrames((buf, off) => {
      if (buf[off + 4] === 1) echo();
      else ack(buf.readUInt32BE(off + 5));
    }),
  );
  let corked = false;
  return {
    send(kind, payload) {
      const f = Buffer.allocUnsafe(5 + payload.length);
      f.writeUInt32BE(1 + payload.length, 0);
      f[4] = kind;
      payload.copy(f, 5);
      if (batched && !corked) {
        corked = true;
        s.cork();
        queueMicrotask(() => {
          corked = false;
          s.uncork();
        });
      }
      s.write(f);
    },
    onEcho: (fn) => {
      echo = fn;
    },
    onAck: (fn) => {
      ack = fn;
    },
    close: async () => {
      s.destroy();
    },
  };
}

async function faultlineEndpoint(port: number): Promise<Endpoint> {
  const t = new TcpTransport({ id: "client", clusterKey: KEY });
  await t.start();
  t.addPeer("echo", { host: "127.0.0.1", port });
  let echo = () => {};
  let ack = (_n: number) => {};
  t.on("message", (_f, m) => {
    const msg = m as { k: number; n?: number };
    if (msg.k === 1) echo();
    else ack(msg.n ?? 0);
  });
  const ready = new Promise<void>((r) => t.on("connection", (e) => e.kind === "connected" && r()));
  t.send("echo", { k: 2, p: Buffer.alloc(0) });
  await ready;
  return {
    send: (k, p) => void t.send("echo", { k, p }),
    onEcho: (fn) => {
      echo = fn;
    },
    onAck: (fn) => {
      ack = fn;
    },
    close: async () => {
      const dropped = Object.values(t.stats().dropped).reduce((a, b) => a + b, 0);
      await t.stop();
      if (dropped > 0) throw new Error(`bench invalid: the transport dropped ${dropped} messages`);
    },
  };
}

/**
 * Pin every thread of a process to `cpus` (a taskset list); false when that cannot be done (one
 * CPU, no taskset). Where the two ends of a round trip run matters more than anything the
 * transport does: on this VM a wake-up on the other vCPU adds ~20 µs each way and leaves the woken
 * side running cold, and the kernel picks either placement from one run to the next.
 */
function pin(pid: number, list: string): boolean {
  if (cpus().length < 2) return false;
  try {
    execFileSync("taskset", ["-acp", list, String(pid)], { stdio: ["ignore", "ignore", "pipe"] });
    return true;
  } catch (e) {
    const why = String((e as { stderr?: Buffer }).stderr ?? e).trim();
    console.error(
      `transport bench: could not pin process ${pid} to CPU ${list} (${why}); rows say "unpinned"`,
    );
    return false;
  }
}

async function rtt(ep: Endpoint, size: number, n: number): Promise<number[]> {
  const payload = randomBytes(size);
  const out: number[] = [];
  for (let i = 0; i < n + 500; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => {
      ep.onEcho(r);
      ep.send(1, payload);
    });
    if (i >= 500) out.push((performance.now() - t0) * 1000); // µs, after warm-up
  }
  return out;
}

async function throughput(ep: Endpoint, size: number, n: number): Promise<{ msgs: number; mb: number }> {
  const payload = randomBytes(size);
  let sent = 0;
  let acked = 0;
  ep.send(4, Buffer.alloc(0));
  const t0 = performance.now();
  await new Promise<void>((done) => {
    const pump = () => {
      while (sent < n && sent - acked < windowFor(size)) {
        ep.send(2, payload);
        sent++;
      }
    };
    ep.onAck((count) => {
      acked = count;
      if (acked >= n - (n % ACK_EVERY)) done();
      else pump();
    });
    pump();
  });
  const secs = (performance.now() - t0) / 1000;
  return { msgs: acked / secs, mb: (acked * size) / secs / 1e6 };
}

/**
 * Both ends in this one process: scheduling and wake-ups drop out, so the difference between the
 * two rows is the JavaScript each round trip costs (two sends and two receives).
 */
async function inProcess(n: number): Promise<{ raw: number[]; faultline: number[] }> {
  const server = createServer((s) => {
    s.setNoDelay(true);
    s.on("data", (d) => s.write(d));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const raw = await rawEndpoint((server.address() as { port: number }).port, false);
  const rawSamples = await rtt(raw, 64, n);
  await raw.close();
  server.close();
  const echo = new TcpTransport({ id: "echo", clusterKey: KEY });
  await echo.start();
  echo.on("message", (from, m) => echo.send(from, m));
  const fl = await faultlineEndpoint(echo.port());
  const flSamples = await rtt(fl, 64, n);
  await fl.close();
  await echo.stop();
  return { raw: rawSamples, faultline: flSamples };
}

export async function benchTransport(quick = false): Promise<string> {
  const N = quick ? 2000 : 20_000;
  const T = quick ? 50_000 : 400_000;
  const rows: (string | number)[][] = [];
  const tput: (string | number)[][] = [];
  const raw = await startHelper<{ port: number }>("bench/echo-peer.ts", ["raw"]);
  const fl = await startHelper<{ port: number }>("bench/echo-peer.ts", ["faultline", KEY.toString("hex")]);
  const all = `0-${cpus().length - 1}`;
  // Two nodes are two machines: each end on a core of its own is the placement that models them;
  // both on one core (no cross-CPU wake-up, so the raw floor is far lower) is shown beside it.
  const placements = [
    { name: "own cores", self: "0", peer: "1" },
    { name: "one core", self: "0", peer: "0" },
  ];
  /** This process on `self`, both echo peers on `peer`. */
  const placeEnds = (p: { self: string; peer: string }) =>
    pin(process.pid, p.self) && pin(raw.proc.pid!, p.peer) && pin(fl.proc.pid!, p.peer);
  let pinned = false;
  try {
    const rawEp = await rawEndpoint(raw.info.port, false);
    const flEp = await faultlineEndpoint(fl.info.port);
    // Round trips first, on quiet processes: a throughput run leaves heaps and JIT state behind.
    for (const size of [64, 4096]) {
      const n = size === 64 ? N : N / 2;
      for (const place of placements) {
        pinned = placeEnds(place);
        if (!pinned && place !== placements[0]) break;
        // Alternate the contenders in rounds so that machine noise hits them alike.
        const rs: number[] = [];
        const fs: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          rs.push(...(await rtt(rawEp, size, n / ROUNDS)));
          fs.push(...(await rtt(flEp, size, n / ROUNDS)));
        }
        const r = summarize(rs);
        const f = summarize(fs);
        rows.push([
          `${size} B`,
          pinned ? place.name : "unpinned",
          fmt(r.p50),
          fmt(r.p99),
          fmt(f.p50),
          fmt(f.p99),
          `${fmt(f.p50 / r.p50, 2)}×`,
        ]);
      }
    }
    if (pinned) placeEnds(placements[0]!);
    const rawBatched = await rawEndpoint(raw.info.port, true);
    for (const size of [64, 4096]) {
      const count = size === 64 ? T : T / 8;
      const best = { tr: 0, tb: 0, tf: 0, mr: 0, mb: 0, mf: 0 };
      for (let round = 0; round < 2; round++) {
        const tr = await throughput(rawEp, size, count);
        const tb = await throughput(rawBatched, size, count);
        const tf = await throughput(flEp, size, count);
        if (tr.msgs > best.tr) [best.tr, best.mr] = [tr.msgs, tr.mb];
        if (tb.msgs > best.tb) [best.tb, best.mb] = [tb.msgs, tb.mb];
        if (tf.msgs > best.tf) [best.tf, best.mf] = [tf.msgs, tf.mb];
      }
      tput.push([
        `${size} B`,
        `${fmt(best.tr / 1000, 0)}k / ${fmt(best.mr, 1)}`,
        `${fmt(best.tb / 1000, 0)}k / ${fmt(best.mb, 1)}`,
        `${fmt(best.tf / 1000, 0)}k / ${fmt(best.mf, 1)}`,
        `${fmt((100 * best.tf) / best.tr, 0)}%`,
        `${fmt((100 * best.tf) / best.tb, 0)}%`,
      ]);
    }
    await Promise.all([rawEp.close(), flEp.close(), rawBatched.close()]);
  } finally {
    if (pinned) pin(process.pid, all); // the benches after this one get every core back
    await stopHelper(raw.proc);
    await stopHelper(fl.proc);
  }
  const inproc = await inProcess(N);
  const ir = summarize(inproc.raw);
  const ifl = summarize(inproc.faultline);
  return [
    `Round trip, one message in flight (µs), echo peer in another process, ${ROUNDS} alternating rounds; the two ends on cores of their own, then on one core:`,
    "",
    table(["size", "placement", "raw p50", "raw p99", "faultline p50", "faultline p99", "p50 ratio"], rows),
    "",
    `One-way throughput (best of 2 alternating rounds, ends on their own cores), 4096 (64 B) or 1024 (4 KiB) messages in flight, ack every ${ACK_EVERY} (msgs/s / MB/s):`,
    "",
    table(
      ["size", "raw, write per msg", "raw, corked per tick", "faultline", "vs raw", "vs corked raw"],
      tput,
    ),
    "",
    "Round trip of 64 B with both ends in this process (µs): the difference is JavaScript per round trip:",
    "",
    table(["raw p50", "faultline p50", "difference"], [[fmt(ir.p50), fmt(ifl.p50), fmt(ifl.p50 - ir.p50)]]),
  ].join("\n");
}
