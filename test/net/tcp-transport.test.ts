import { randomBytes } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import type { ConnectionEvent } from "../../src/net/transport.ts";
import { Processes, waitFor } from "../fixtures/processes.ts";

const KEY = randomBytes(32);
const PEER = "test/fixtures/tcp-peer.ts";

describe("TCP transport on real sockets", () => {
  const procs = new Processes();
  const transports: TcpTransport[] = [];
  const servers: Server[] = [];
  const make = async (id: string, extra: Partial<ConstructorParameters<typeof TcpTransport>[0]> = {}) => {
    const t = new TcpTransport({ id, clusterKey: KEY, ...extra });
    transports.push(t);
    await t.start();
    return t;
  };
  /**
   * A TCP relay on 127.0.0.1 in front of `t`, which may change the chunks going to it or back;
   * with `connections`, each connection it relays is listed there and, while `stalled`, its bytes
   * go nowhere (a connection stuck in TCP's retransmission backoff).
   */
  const relay = async (
    t: TcpTransport,
    change: {
      toward?: (chunk: Buffer) => void;
      back?: (chunk: Buffer) => void;
      connections?: Array<{ stalled: boolean }>;
    },
  ) => {
    const to = t.address() as { host: string; port: number };
    const server = createServer((inbound) => {
      const c = { stalled: false };
      change.connections?.push(c);
      const out = connect(to.port, "127.0.0.1");
      inbound.on("data", (chunk: Buffer) => {
        change.toward?.(chunk);
        if (!c.stalled) out.write(chunk);
      });
      out.on("data", (chunk: Buffer) => {
        change.back?.(chunk);
        if (!c.stalled) inbound.write(chunk);
      });
      for (const [x, y] of [
        [inbound, out],
        [out, inbound],
      ] as const) {
        x.on("error", () => y.destroy());
        x.on("close", () => y.destroy());
      }
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { host: "127.0.0.1", port: (server.address() as { port: number }).port };
  };
  afterEach(async () => {
    await Promise.all(transports.splice(0).map((t) => t.stop()));
    await procs.killAll();
    for (const s of servers.splice(0)) s.close();
  });

  it("keeps exactly one connection per peer pair, even when both dial at once", async () => {
    const ts = await Promise.all(["n1", "n2", "n3"].map((id) => make(id)));
    for (const t of ts) for (const u of ts) if (t !== u) t.addPeer(u.id, u.address());
    let got = 0;
    for (const t of ts) t.on("message", () => got++);
    for (let round = 0; round < 3; round++)
      for (const t of ts) for (const u of ts) if (t !== u) t.send(u.id, round);
    await waitFor(() => got === 18, "18 messages");
    await new Promise((r) => setTimeout(r, 50));
    for (const t of ts) expect(t.stats().openConnections).toBe(2);
  });

  it("dials a pinned address as given, not the address the peer announces (a relay in between)", async () => {
    for (const pinned of [true, false]) {
      const b = await make("b");
      const port = b.address() as { host: string; port: number };
      // A relay in front of b, counting the connections made through it.
      let relayed = 0;
      const relay = createServer((inbound) => {
        relayed++;
        const out = connect(port.port, "127.0.0.1");
        inbound.pipe(out).pipe(inbound);
        inbound.on("error", () => out.destroy());
        out.on("error", () => inbound.destroy());
      });
      servers.push(relay);
      await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
      const via = { host: "127.0.0.1", port: (relay.address() as { port: number }).port };
      const a = await make(`a${pinned}`, { peers: { b: via }, pinPeers: pinned });
      const got: unknown[] = [];
      // b dials a directly: a learns the address b announces...
      b.addPeer(a.id, a.address());
      b.send(a.id, 1);
      await waitFor(() => a.peerState("b") === "connected", "b's direct connection");
      // ...and b restarts on the same port, so a must dial it again.
      await b.stop();
      await waitFor(() => a.peerState("b") !== "connected", "a to see b go");
      const b2 = await make("b", { port: port.port });
      b2.on("message", (_f, m) => got.push(m));
      a.send("b", 2);
      await waitFor(() => got.length === 1, "a's message to reach b again");
      if (pinned) expect(relayed).toBeGreaterThan(0);
      else expect(relayed).toBe(0);
      await Promise.all([a.stop(), b2.stop()]);
    }
  });

  it("refresh() replaces a stalled connection with a fresh one, quietly; only from the smaller id, once an interval", async () => {
    const b = await make("b");
    const relayed: Array<{ stalled: boolean }> = [];
    let stallNew = false; // connections the relay takes from now on are stalled from the start
    const push = relayed.push.bind(relayed);
    relayed.push = (...cs) => push(...cs.map((c) => Object.assign(c, { stalled: stallNew })));
    const via = await relay(b, { connections: relayed });
    const server = servers.at(-1)!;
    const a = await make("a", {
      peers: { b: via },
      pinPeers: true,
      refreshIntervalMs: 100,
      handshakeTimeoutMs: 300,
    });
    const events: string[] = [];
    a.on("connection", (e) => events.push(`a:${e.kind}`));
    b.on("connection", (e) => events.push(`b:${e.kind}`));
    const atA: unknown[] = [];
    const atB: unknown[] = [];
    a.on("message", (_f, m) => atA.push(m));
    b.on("message", (_f, m) => atB.push(m));
    a.send("b", "one");
    await waitFor(() => atB.length === 1, "b to get the first message");
    b.send("a", "back");
    await waitFor(() => atA.length === 1, "a to get b's answer");

    relayed[0]!.stalled = true;
    a.send("b", "lost in the stall");
    b.refresh("a"); // the larger id: a would turn its dial down
    expect(b.stats().refreshes).toBe(0);
    a.refresh("b");
    a.refresh("b"); // one at a time
    expect(a.stats().refreshes).toBe(1);
    await waitFor(() => relayed.length === 2, "a fresh connection through the relay");
    a.send("b", "two");
    await waitFor(() => atB.includes("two"), "b to get a message on the fresh connection");
    b.send("a", "back again");
    await waitFor(() => atA.includes("back again"), "a to get b's answer on it");
    await waitFor(() => a.stats().openConnections === 1, "the stalled connection closed");
    a.refresh("b"); // within refreshIntervalMs of the last
    expect(a.stats().refreshes).toBe(1);
    // The replacement is not news: no closed, reset or timeout event on either side.
    expect(events.filter((e) => !e.endsWith(":connected"))).toEqual([]);

    // A fresh dial through a path still down times out: no news, and the old connection stays
    // the one that counts.
    relayed[1]!.stalled = true;
    stallNew = true;
    await new Promise((r) => setTimeout(r, 120));
    a.refresh("b");
    expect(a.stats().refreshes).toBe(2);
    await new Promise((r) => setTimeout(r, 500)); // past the handshake timeout
    expect(relayed.length).toBe(3);
    expect(events.filter((e) => !e.endsWith(":connected"))).toEqual([]);
    expect(a.peerState("b")).toBe("connected");
    // A refusal is news (nothing listens there any more), though the old connection still stands.
    server.close();
    a.refresh("b");
    await waitFor(() => events.includes("a:refused"), "the refusal reported");
    expect(a.peerState("b")).toBe("connected");
  });

  it("a HELLO damaged on the way back is integrity evidence about the peer dialed; garbage is not", async () => {
    const b = await make("b");
    // In front of b: flips the last bit of the first chunk b sends (its HELLO's MAC).
    let first = true;
    const toB = await relay(b, {
      back: (chunk) => {
        if (first) chunk[chunk.length - 1]! ^= 1;
        first = false;
      },
    });
    // Not faultline at all: answers anything with text.
    const garbage = createServer((s) => {
      s.on("error", () => {});
      s.end("HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    servers.push(garbage);
    await new Promise<void>((r) => garbage.listen(0, "127.0.0.1", r));
    const port = (s: Server) => (s.address() as { port: number }).port;
    const a = await make("a", {
      peers: { b: toB, c: { host: "127.0.0.1", port: port(garbage) } },
      reconnectInitialMs: 50,
      reconnectMaxMs: 100,
    });
    const integrity: Array<{ peer: string; reason: string }> = [];
    a.on("integrity", (e) => integrity.push({ peer: e.peer, reason: e.reason }));
    a.send("b", 1);
    a.send("c", 1);
    await waitFor(() => integrity.some((e) => e.peer === "b"), "integrity evidence about b");
    expect(integrity.find((e) => e.peer === "b")!.reason).toBe("bad-mac");
    await new Promise((r) => setTimeout(r, 300)); // several dials to c meanwhile
    expect(integrity.filter((e) => e.peer === "c")).toEqual([]);
  });

  it("a frame damaged one way: its length fails at once, and the receiver's Close tells the sender", async () => {
    const b = await make("b");
    // In front of b: once armed, flips the top bit of the middle length byte of the next frame a
    // sends (its length grows by 32 KiB: without the header's check, b would wait for bytes that
    // never come, and the connection would hang one way).
    let armed = false;
    const toB = await relay(b, {
      toward: (chunk) => {
        if (armed) chunk[6]! ^= 0x80;
        armed = false;
      },
    });
    const a = await make("a", {
      peers: { b: toB },
      reconnectInitialMs: 50,
      reconnectMaxMs: 100,
    });
    const seen: Array<{ at: string; peer: string; reason: string }> = [];
    a.on("integrity", (e) => seen.push({ at: "a", peer: e.peer, reason: e.reason }));
    b.on("integrity", (e) => seen.push({ at: "b", peer: e.peer, reason: e.reason }));
    const got: unknown[] = [];
    b.on("message", (_f, m) => got.push(m));
    a.send("b", 1);
    await waitFor(() => got.length === 1, "the first message");
    armed = true;
    a.send("b", 2);
    await waitFor(() => seen.length === 2, "evidence at both ends");
    expect(seen).toEqual([
      { at: "b", peer: "a", reason: "bad-check" },
      { at: "a", peer: "b", reason: "peer-closed" },
    ]);
    expect(b.stats().badFrames).toEqual({ "bad-check": 1 });
    expect(a.stats().badFrames).toEqual({ "peer-closed": 1 });
    // The connection was closed, not left hanging: the next message goes on a new one.
    a.send("b", 3);
    await waitFor(() => got.includes(3), "a message after the damage");
  });

  it("batches fit the frame limit; a frame over the peer's limit is a mismatch, not evidence of damage", async () => {
    const msgs = Array.from({ length: 5 }, (_, i) => Buffer.alloc(1500, i));
    // Both ends at a 2 KiB limit: five 1.5 KB messages go in five frames, all delivered.
    const b = await make("b", { maxFrameBytes: 2048 });
    const a = await make("a", { maxFrameBytes: 2048, peers: { b: b.address() } });
    const seen: string[] = [];
    for (const t of [a, b]) t.on("integrity", (e) => seen.push(`${t.id}: ${e.peer} ${e.reason}`));
    const got: unknown[] = [];
    b.on("message", (_f, m) => got.push(m));
    for (const m of msgs) a.send("b", m);
    await waitFor(() => got.length === 5, "five messages under a 2 KiB frame limit");
    // Twenty of 102 bytes encoded: 2,040 bytes, but 2,120 with each one's 4-byte length.
    for (let i = 0; i < 20; i++) a.send("b", Buffer.alloc(100, i));
    await waitFor(() => got.length === 25, "twenty small messages under the same limit");
    expect(b.stats().badFrames).toEqual({});
    // A sender with a larger limit batches them into one frame the receiver refuses: the receiver
    // says why (CLOSE "oversized"), and neither end counts it as damage.
    const c = await make("c", { peers: { b: b.address() } });
    c.on("integrity", (e) => seen.push(`c: ${e.peer} ${e.reason}`));
    c.send("b", 0);
    await waitFor(() => got.length === 26, "c connected");
    for (const m of msgs) c.send("b", m);
    await waitFor(() => (c.stats().badFrames["peer-closed"] ?? 0) === 1, "c to hear b's reason");
    expect(b.stats().badFrames).toEqual({ oversized: 1 });
    expect(seen).toEqual([]);
  });

  it("SIGKILL of a peer process surfaces as connection events, and its restart reconnects", async () => {
    const a = await make("a", { reconnectInitialMs: 20, reconnectMaxMs: 100 });
    const events: ConnectionEvent[] = [];
    a.on("connection", (e) => events.push(e));
    const echoes: unknown[] = [];
    a.on("message", (_f, m) => echoes.push(m));

    const first = await procs.startTs<{ port: number; boot: string }>(PEER, ["b", "0", KEY.toString("hex")]);
    a.addPeer("b", { host: "127.0.0.1", port: first.first.port });
    a.send("b", 1);
    await waitFor(() => echoes.length === 1, "first echo");
    expect(events.find((e) => e.kind === "connected")?.boot).toBe(first.first.boot);

    first.proc.kill("SIGKILL");
    await waitFor(
      () => events.some((e) => e.kind === "closed" || e.kind === "reset"),
      "close/reset after SIGKILL",
    );
    await waitFor(() => events.some((e) => e.kind === "refused"), "refused while the peer is down");

    const second = await procs.startTs<{ port: number; boot: string }>(PEER, [
      "b",
      String(first.first.port),
      KEY.toString("hex"),
    ]);
    await waitFor(() => events.filter((e) => e.kind === "connected").length === 2, "reconnect", 15_000);
    const reconnected = events.filter((e) => e.kind === "connected")[1]!;
    expect(reconnected.boot).toBe(second.first.boot);
    expect(reconnected.boot).not.toBe(first.first.boot);
    a.send("b", 2);
    await waitFor(() => echoes.length === 2, "echo after restart");
    expect(echoes).toEqual([{ echo: 1 }, { echo: 2 }]);
  });

  it("a node with another cluster key cannot talk to the cluster, and it is counted", async () => {
    const a = await make("a");
    const mallory = await make("m", { clusterKey: randomBytes(32) });
    let delivered = 0;
    a.on("message", () => delivered++);
    mallory.addPeer("a", a.address());
    mallory.send("a", "let me in");
    await waitFor(() => (a.stats().badFrames["bad-mac"] ?? 0) >= 1, "rejected HELLO");
    await new Promise((r) => setTimeout(r, 50));
    expect(delivered).toBe(0);
    await mallory.stop(); // it keeps redialing; once it stops, nothing of it stays open at a
    await waitFor(() => a.stats().openConnections === 0, "mallory's sockets to be gone");
  });

  it("dialing an address where another node listens fails the handshake with a clear count", async () => {
    const a = await make("a");
    const c = await make("c");
    const b = await make("b");
    b.addPeer("a", c.address()); // wrong: that is c
    let delivered = 0;
    for (const t of [a, c]) t.on("message", () => delivered++);
    b.send("a", "hello?");
    await waitFor(
      () => (b.stats().badFrames.handshake ?? 0) + (c.stats().badFrames.handshake ?? 0) >= 1,
      "handshake failure",
    );
    expect(delivered).toBe(0);
  });

  it("a frame the socket still holds is never overwritten: a stalled reader gets every message intact", async () => {
    // Frames are sealed into memory reused from the previous frame when the socket took that one
    // at once; once the receiver stops reading, writes queue in the socket and must keep their bytes.
    const a = await make("a", { maxQueueMessages: 100_000, maxQueueBytes: 64 * 1024 * 1024 });
    const b = await make("b");
    a.addPeer("b", { host: "127.0.0.1", port: b.port() });
    const got: { i: number; p: Uint8Array }[] = [];
    b.on("message", (_f, m) => got.push(m as { i: number; p: Uint8Array }));
    a.send("b", { i: -1, p: Buffer.alloc(0) });
    await waitFor(() => got.length === 1, "connection up");
    const inbound = [...(b as unknown as { sockets: Set<import("node:net").Socket> }).sockets];
    for (const s of inbound) s.pause();
    const body = (i: number) => Buffer.alloc(500 + ((i * 977) % 3500), i & 0xff);
    const N = 3000; // ~6 MB: far more than the kernel's socket buffers hold
    for (let i = 0; i < N; i++) {
      a.send("b", { i, p: body(i) });
      if (i % 3 === 0) await new Promise((r) => setImmediate(r)); // frames of one and of several messages
    }
    expect(a.stats().dropped).toEqual({});
    // The case under test happened: frames are waiting inside a's socket.
    const outbound = [...(a as unknown as { sockets: Set<import("node:net").Socket> }).sockets];
    expect(outbound.some((s) => s.writableLength > 0)).toBe(true);
    for (const s of inbound) s.resume();
    await waitFor(() => got.length === N + 1, "every message delivered", 20_000);
    for (let i = 0; i < N; i++) {
      expect(got[i + 1]!.i).toBe(i);
      expect(Buffer.from(got[i + 1]!.p).equals(body(i))).toBe(true);
    }
    expect(b.stats().badFrames).toEqual({});
  });

  it("a peer that is gone costs a bounded queue, with drops counted", async () => {
    const dead = createServer();
    servers.push(dead);
    await new Promise<void>((r) => dead.listen(0, "127.0.0.1", () => r()));
    const port = (dead.address() as { port: number }).port;
    dead.close(); // nothing listens there now
    const a = await make("a", { maxQueueMessages: 1000 });
    a.addPeer("b", { host: "127.0.0.1", port });
    for (let i = 0; i < 50_000; i++) a.send("b", { i, pad: "x".repeat(100) });
    expect(a.queued("b")).toBeLessThanOrEqual(1000);
    expect(a.stats().dropped["queue-overflow"]).toBe(49_000);
  });

  it("respects backpressure from a frozen (SIGSTOP) peer: memory stays bounded", async () => {
    const a = await make("a", { maxQueueMessages: 2000, maxQueueBytes: 4 * 1024 * 1024 });
    const peer = await procs.startTs<{ port: number }>(PEER, ["b", "0", KEY.toString("hex")]);
    a.addPeer("b", { host: "127.0.0.1", port: peer.first.port });
    const echoes: unknown[] = [];
    a.on("message", (_f, m) => echoes.push(m));
    a.send("b", "warm-up");
    await waitFor(() => echoes.length === 1, "connection up");
    peer.proc.kill("SIGSTOP");
    const pad = "y".repeat(1024);
    const rss0 = process.memoryUsage().rss;
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 1000; i++) a.send("b", { round, i, pad });
      await new Promise((r) => setImmediate(r));
    }
    const grown = process.memoryUsage().rss - rss0;
    expect(a.queued("b")).toBeLessThanOrEqual(2000);
    expect(a.stats().dropped["queue-overflow"]).toBeGreaterThan(100_000);
    expect(grown).toBeLessThan(150 * 1024 * 1024); // 200 MB were offered
    peer.proc.kill("SIGCONT");
  });
});

describe("TCP transport: hostile handshakes and oversized messages", () => {
  it("a node of another handshake version is refused with a warning that names both versions", async () => {
    const { encode } = await import("../../src/runtime/codec.ts");
    const { FrameType, sealFrame } = await import("../../src/runtime/frame.ts");
    const { MacKey } = await import("../../src/runtime/mac.ts");
    const { HANDSHAKE_VERSION, newNonce } = await import("../../src/net/tcp-handshake.ts");
    const pino = (await import("pino")).default;
    const warnings: string[] = [];
    const logger = pino({ level: "warn" }, { write: (l: string) => warnings.push(JSON.parse(l).msg) });
    const b = new TcpTransport({ id: "b", clusterKey: KEY, logger });
    await b.start();
    try {
      const s = connect(b.address() as { host: string; port: number });
      await new Promise<void>((r) => s.once("connect", () => r()));
      const closed = new Promise<void>((r) => s.once("close", () => r()));
      s.on("error", () => {});
      const old = HANDSHAKE_VERSION - 1;
      const hello = encode({ v: old, from: "old", to: "b", boot: "x", nonce: newNonce() });
      s.write(sealFrame(FrameType.Hello, hello, new MacKey(KEY)));
      await closed;
      expect(b.stats().badFrames["bad-payload"]).toBe(1);
      expect(warnings.join("\n")).toContain(`handshake version ${old} is not ${HANDSHAKE_VERSION}`);
    } finally {
      await b.stop();
    }
  });

  it("a replayed HELLO (no session key) never displaces a live connection", async () => {
    const { connect } = await import("node:net");
    const { encode } = await import("../../src/runtime/codec.ts");
    const { FrameType, sealFrame } = await import("../../src/runtime/frame.ts");
    const { MacKey } = await import("../../src/runtime/mac.ts");
    const { newNonce } = await import("../../src/net/tcp-handshake.ts");
    const a = new TcpTransport({ id: "a", clusterKey: KEY });
    const b = new TcpTransport({ id: "b", clusterKey: KEY });
    await Promise.all([a.start(), b.start()]);
    try {
      a.addPeer("b", b.address());
      const events: ConnectionEvent[] = [];
      a.on("connection", (e) => events.push(e));
      let got = 0;
      b.on("message", () => got++);
      a.send("b", 1);
      await waitFor(() => got === 1, "a live connection");
      // Someone replays a HELLO from "a" (with a's boot id or another): it cannot confirm the key.
      for (const boot of [a.boot, "another-boot"]) {
        const hello = encode({ v: 1, from: "a", to: "b", boot, nonce: newNonce() });
        await new Promise<void>((resolve) => {
          const s = connect(b.port(), "127.0.0.1", () =>
            s.write(sealFrame(FrameType.Hello, hello, new MacKey(KEY))),
          );
          s.on("data", () => {});
          s.on("error", () => {});
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 100);
        });
      }
      a.send("b", 2);
      await waitFor(() => got === 2, "the original connection still carrying messages");
      expect(events.filter((e) => e.kind !== "connected")).toEqual([]);
      expect(events.filter((e) => e.kind === "connected")).toHaveLength(1);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("refuses a message larger than a frame at send time, and counts it", async () => {
    const a = new TcpTransport({ id: "a", clusterKey: KEY, maxFrameBytes: 64 * 1024 });
    await a.start();
    try {
      a.addPeer("b", { host: "127.0.0.1", port: 9 });
      expect(a.send("b", Buffer.alloc(100 * 1024))).toBe(false);
      expect(a.stats().dropped["too-large"]).toBe(1);
      expect(a.send("b", Buffer.alloc(1024))).toBe(true);
    } finally {
      await a.stop();
    }
  });
});
