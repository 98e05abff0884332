import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { type Clock, realClock, type Timer } from "../runtime/clock.ts";
import { decode, encode } from "../runtime/codec.ts";
import { Emitter } from "../runtime/emitter.ts";
import { ErrorCode, FaultlineError, type FrameError } from "../runtime/errors.ts";
import { FRAME_OVERHEAD, MAX_FRAME_PAYLOAD } from "../runtime/frame.ts";
import { silentLogger } from "../runtime/logger.ts";
import { MacKey } from "../runtime/mac.ts";
import { RateLimiter } from "../runtime/rate-limit.ts";
import { createRng, type Rng } from "../runtime/rng.ts";
import { SendQueue } from "./send-queue.ts";
import { type ConnectionHost, TcpConnection } from "./tcp-connection.ts";
import { newBootId } from "./tcp-handshake.ts";
import { TCP_DEFAULTS, type TcpTransportOptions } from "./tcp-options.ts";
import type {
  Address,
  ConnectionEvent,
  ConnectionEventKind,
  NodeId,
  Transport,
  TransportEvents,
  TransportStats,
} from "./transport.ts";
import { bump, emptyStats, registerTransportMetrics } from "./transport-metrics.ts";

interface Peer {
  id: NodeId;
  addr: Address | undefined;
  /** An address given by the operator: not replaced by what the peer or gossip says. */
  pinned: boolean;
  queue: SendQueue;
  conn: TcpConnection | undefined;
  dial: TcpConnection | undefined;
  retry: Timer | undefined;
  backoffMs: number;
  /** Keep a connection to this peer (we sent to it, or were asked to). */
  wanted: boolean;
  flushScheduled: boolean;
  /** When a stalled connection to it was last replaced (refresh), ms. */
  refreshedAt: number | undefined;
}

/** Frame errors that mean bytes were damaged on the way (the others are mismatches of software). */
const DAMAGE = new Set(["bad-magic", "bad-version", "bad-check", "bad-mac"]);

/**
 * The real-world transport: one authenticated TCP connection per peer pair (simultaneous dials are
 * resolved deterministically: the connection dialed by the smaller id wins), reconnect with
 * jittered exponential backoff, bounded per-peer queues drained under socket backpressure, and
 * queued messages coalesced into one frame per write.
 */
export class TcpTransport implements Transport, ConnectionHost {
  readonly id: NodeId;
  readonly boot = newBootId();
  readonly clusterKey: Uint8Array;
  readonly helloKey: MacKey;
  readonly clock: Clock;
  readonly maxFrameBytes: number;
  readonly handshakeTimeoutMs: number;

  private readonly o: Required<
    Omit<
      TcpTransportOptions,
      "peers" | "pinPeers" | "clock" | "rng" | "logger" | "metrics" | "path" | "listen"
    >
  >;
  private readonly listens: boolean;
  private readonly path: string | undefined;
  private readonly rng: Rng;
  private readonly log: Logger;
  private readonly emitter: Emitter<TransportEvents>;
  private readonly peerMap = new Map<NodeId, Peer>();
  private readonly sockets = new Set<Socket>();
  private readonly pendingInbound = new Set<TcpConnection>();
  private readonly badFrameLog: RateLimiter;
  /** Largest batch payload: maxBatchBytes, at most the frame limit. */
  private readonly batchBytes: number;
  private readonly counters: TransportStats = emptyStats();
  private readonly unregisterMetrics: (() => void) | undefined;
  private server: Server | undefined;
  private bound: Address | undefined;
  private state: "new" | "started" | "stopped" = "new";
  private stopping: Promise<void> | undefined;

  constructor(options: TcpTransportOptions) {
    if (!(options.clusterKey instanceof Uint8Array) || options.clusterKey.length < 16) {
      throw new FaultlineError(
        ErrorCode.BadConfig,
        "clusterKey must be at least 16 bytes: generate one with `openssl rand -hex 32` and give every node the same",
      );
    }
    this.id = options.id;
    this.clusterKey = options.clusterKey;
    this.helloKey = new MacKey(options.clusterKey);
    this.clock = options.clock ?? realClock;
    this.rng = options.rng ?? createRng((Math.random() * 2 ** 32) >>> 0); // real-io: jitter only
    this.log = (options.logger ?? silentLogger()).child({ component: "tcp", node: options.id });
    this.o = {
      id: options.id,
      clusterKey: options.clusterKey,
      host: options.host ?? TCP_DEFAULTS.host,
      port: options.port ?? TCP_DEFAULTS.port,
      maxFrameBytes: options.maxFrameBytes ?? TCP_DEFAULTS.maxFrameBytes,
      maxQueueMessages: options.maxQueueMessages ?? TCP_DEFAULTS.maxQueueMessages,
      maxQueueBytes: options.maxQueueBytes ?? TCP_DEFAULTS.maxQueueBytes,
      overflow: options.overflow ?? TCP_DEFAULTS.overflow,
      maxBatchBytes: options.maxBatchBytes ?? TCP_DEFAULTS.maxBatchBytes,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? TCP_DEFAULTS.handshakeTimeoutMs,
      refreshIntervalMs: options.refreshIntervalMs ?? TCP_DEFAULTS.refreshIntervalMs,
      reconnectInitialMs: options.reconnectInitialMs ?? TCP_DEFAULTS.reconnectInitialMs,
      reconnectMaxMs: options.reconnectMaxMs ?? TCP_DEFAULTS.reconnectMaxMs,
      maxPendingHandshakes: options.maxPendingHandshakes ?? TCP_DEFAULTS.maxPendingHandshakes,
      badFrameLogIntervalMs: options.badFrameLogIntervalMs ?? TCP_DEFAULTS.badFrameLogIntervalMs,
    };
    if (
      !Number.isInteger(this.o.maxFrameBytes) ||
      this.o.maxFrameBytes < 1024 ||
      this.o.maxFrameBytes > MAX_FRAME_PAYLOAD
    ) {
      throw new FaultlineError(
        ErrorCode.BadConfig,
        `maxFrameBytes must be a whole number from 1024 to ${MAX_FRAME_PAYLOAD} (a frame's 24-bit length), not ${this.o.maxFrameBytes}`,
      );
    }
    if (!(this.o.refreshIntervalMs >= 0)) {
      throw new FaultlineError(
        ErrorCode.BadConfig,
        `refreshIntervalMs must be a number of milliseconds, 0 or more, not ${this.o.refreshIntervalMs}`,
      );
    }
    if (!Number.isInteger(this.o.maxBatchBytes) || this.o.maxBatchBytes < 1) {
      throw new FaultlineError(
        ErrorCode.BadConfig,
        `maxBatchBytes must be a whole number of at least 1, not ${this.o.maxBatchBytes}`,
      );
    }
    // A batch is one frame's payload: never more than the frame limit (both ends share it).
    this.batchBytes = Math.min(this.o.maxBatchBytes, this.o.maxFrameBytes);
    this.path = options.path;
    this.listens = options.listen ?? true;
    this.maxFrameBytes = this.o.maxFrameBytes;
    this.handshakeTimeoutMs = this.o.handshakeTimeoutMs;
    this.badFrameLog = new RateLimiter(this.clock, this.o.badFrameLogIntervalMs);
    this.emitter = new Emitter<TransportEvents>((err, event) =>
      this.log.error({ err, event }, "a transport event listener threw; the transport carries on"),
    );
    for (const [id, addr] of Object.entries(options.peers ?? {}))
      this.addPeer(id, addr, { pinned: options.pinPeers ?? false });
    if (options.metrics) this.unregisterMetrics = registerTransportMetrics(options.metrics, this);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.state !== "new") throw new FaultlineError(ErrorCode.Stopped, "a transport can be started once");
    if (!this.listens) {
      this.state = "started";
      return;
    }
    const server = createServer((socket) => this.onInbound(socket));
    this.server = server;
    const where = this.path ?? `${this.o.host}:${this.o.port}`;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          new FaultlineError(
            ErrorCode.BadConfig,
            `cannot listen on ${where} (${err.code}): choose another ${this.path ? "path" : "port"} or stop what uses it`,
            { cause: err },
          ),
        ),
      );
      if (this.path) server.listen(this.path, () => resolve());
      else server.listen(this.o.port, this.o.host, () => resolve());
    });
    server.on("error", (err) => this.log.error({ err }, "listener error"));
    const a = server.address();
    if (this.path) this.bound = { path: this.path };
    else if (a && typeof a === "object") this.bound = { host: a.address, port: a.port };
    this.state = "started";
    this.log.debug({ address: this.bound }, "listening");
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.state = "stopped";
    for (const p of this.peerMap.values()) {
      p.retry?.cancel();
      p.retry = undefined;
      const n = p.queue.clear();
      if (n > 0) bump(this.counters.dropped, "stopped", n);
    }
    const closed = this.server ? new Promise<void>((r) => this.server!.close(() => r())) : Promise.resolve();
    const gone = [...this.sockets].map(
      (s) =>
        new Promise<void>((r) => {
          if (s.destroyed && s.closed) r();
          else {
            s.once("close", () => r());
            s.destroy();
          }
        }),
    );
    await Promise.all([closed, ...gone]);
    this.unregisterMetrics?.();
    this.emitter.clear();
  }

  /** Where this transport listens (after start). */
  address(): Address {
    if (!this.bound)
      throw new FaultlineError(ErrorCode.Stopped, "transport is not listening: call start() first");
    return this.bound;
  }

  /** The TCP port this transport listens on (after start; not for a Unix socket). */
  port(): number {
    const a = this.address();
    if (!("port" in a))
      throw new FaultlineError(ErrorCode.BadArgument, `transport listens on ${a.path}, not a TCP port`);
    return a.port;
  }

  listenAddress(): Address | undefined {
    return this.bound;
  }

  // ---- public API --------------------------------------------------------------------------

  on<K extends keyof TransportEvents>(event: K, fn: (...args: TransportEvents[K]) => void): () => void {
    return this.emitter.on(event, fn);
  }

  /**
   * Where a peer listens. `pinned`: dial exactly this address from now on (a relay or NAT stands
   * in between); a pinned address is replaced only by another pinned one.
   */
  addPeer(id: NodeId, addr: Address, options: { connect?: boolean; pinned?: boolean } = {}): void {
    if (id === this.id) return;
    const p = this.peer(id);
    if (!p.pinned || options.pinned) {
      p.addr = addr;
      p.pinned = options.pinned ?? false;
    }
    if (options.connect) {
      p.wanted = true;
      this.ensureDial(p);
    }
  }

  removePeer(id: NodeId): void {
    const p = this.peerMap.get(id);
    if (!p) return;
    this.peerMap.delete(id);
    p.retry?.cancel();
    for (const c of [p.conn, p.dial]) {
      if (c) {
        c.superseded = true;
        c.destroy();
      }
    }
    p.queue.clear();
  }

  peers(): NodeId[] {
    return [...this.peerMap.keys()];
  }

  /** Connection state of a peer, for views and tests. */
  peerState(id: NodeId): "connected" | "connecting" | "idle" | "unknown" {
    const p = this.peerMap.get(id);
    if (!p) return "unknown";
    if (p.conn) return "connected";
    if (p.dial || p.retry) return "connecting";
    return "idle";
  }

  /** Messages waiting in a peer's queue. */
  queued(id: NodeId): number {
    return this.peerMap.get(id)?.queue.length ?? 0;
  }

  send(to: NodeId, message: unknown): boolean {
    if (this.state === "stopped") {
      bump(this.counters.dropped, "stopped");
      return false;
    }
    const p = this.peerMap.get(to);
    if (!p || (!p.addr && !p.conn)) {
      throw new FaultlineError(
        ErrorCode.UnknownPeer,
        `no address is known for peer "${to}": add it with addPeer(id, { host, port }) or wait until it connects`,
      );
    }
    const bytes = encode(message);
    if (bytes.length + 4 + FRAME_OVERHEAD > this.o.maxFrameBytes) {
      // The receiver would reject the frame (and drop the connection): refuse it here, loudly.
      bump(this.counters.dropped, "too-large");
      if (this.badFrameLog.take(`too-large:${to}`) >= 0) {
        this.log.warn(
          { to, bytes: bytes.length, limit: this.o.maxFrameBytes },
          "message larger than a frame: dropped",
        );
      }
      return false;
    }
    const dropped = p.queue.push(bytes);
    if (dropped > 0) bump(this.counters.dropped, "queue-overflow", dropped);
    p.wanted = true;
    if (p.conn) this.scheduleFlush(p);
    else this.ensureDial(p);
    return !(dropped > 0 && this.o.overflow === "drop-newest");
  }

  /**
   * Replace the connection to `to` with a fresh one (the caller has seen it stall), at most once
   * per refreshIntervalMs. The old connection carries on until the new one is established, then is
   * closed like any superseded one (frames still in it are lost: delivery is best effort).
   * Whether bytes still arrive says nothing: after an outage each direction leaves its backoff on
   * its own timer, and a connection can deliver one way while the other is still stuck.
   * Only the side with the smaller id refreshes: its dial wins a simultaneous dial, so the peer
   * takes it; a dial from the other side would be turned down while the old connection lasts (a
   * round trip needs both directions, so the smaller side sees a one-way stall either way).
   */
  refresh(to: NodeId): void {
    const p = this.peerMap.get(to);
    if (this.state !== "started" || !p || !p.conn || p.dial || !p.addr || !(this.id < to)) return;
    const now = this.clock.now();
    if (p.refreshedAt !== undefined && now - p.refreshedAt < this.o.refreshIntervalMs) return;
    p.refreshedAt = now;
    this.counters.refreshes++;
    this.log.debug({ peer: to }, "connection stalled: dialing afresh");
    this.dial(p, p.addr).refresh = true;
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      badFrames: { ...this.counters.badFrames },
      dropped: { ...this.counters.dropped },
      openConnections: this.sockets.size,
    };
  }

  // ---- peers, dialing, flushing ------------------------------------------------------------

  private peer(id: NodeId): Peer {
    let p = this.peerMap.get(id);
    if (!p) {
      p = {
        id,
        addr: undefined,
        pinned: false,
        queue: new SendQueue(this.o.maxQueueMessages, this.o.maxQueueBytes, this.o.overflow),
        conn: undefined,
        dial: undefined,
        retry: undefined,
        backoffMs: this.o.reconnectInitialMs,
        wanted: false,
        flushScheduled: false,
        refreshedAt: undefined,
      };
      this.peerMap.set(id, p);
    }
    return p;
  }

  private ensureDial(p: Peer): void {
    if (this.state !== "started" || p.conn || p.dial || p.retry || !p.addr) return;
    this.dial(p, p.addr);
  }

  private dial(p: Peer, a: Address): TcpConnection {
    const socket =
      "path" in a ? createConnection({ path: a.path }) : createConnection({ host: a.host, port: a.port });
    this.track(socket);
    p.dial = new TcpConnection(this, socket, "out", p.id);
    return p.dial;
  }

  private scheduleRetry(p: Peer): void {
    if (this.state !== "started" || !p.wanted || !p.addr || p.retry || p.conn || p.dial) return;
    const delay = p.backoffMs * this.rng.range(0.8, 1.2);
    p.backoffMs = Math.min(p.backoffMs * 2, this.o.reconnectMaxMs);
    p.retry = this.clock.setTimer(delay, () => {
      p.retry = undefined;
      this.ensureDial(p);
    });
  }

  private scheduleFlush(p: Peer): void {
    if (p.flushScheduled) return;
    p.flushScheduled = true;
    queueMicrotask(() => this.flush(p));
  }

  private flush(p: Peer): void {
    p.flushScheduled = false;
    const conn = p.conn;
    if (!conn || conn.blocked) return;
    while (p.queue.length > 0) {
      const batch = p.queue.take(this.batchBytes);
      const ok = conn.sendBatch(batch);
      this.counters.sent += batch.length;
      for (const m of batch) this.counters.bytesSent += m.length;
      if (!ok) break;
    }
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  private onInbound(socket: Socket): void {
    this.track(socket);
    if (this.state !== "started" || this.pendingInbound.size >= this.o.maxPendingHandshakes) {
      bump(this.counters.dropped, "handshake-limit");
      socket.destroy();
      return;
    }
    this.pendingInbound.add(new TcpConnection(this, socket, "in"));
  }

  private emitConnection(peer: NodeId, kind: ConnectionEventKind, code?: string, boot?: string): void {
    const ev: ConnectionEvent = { peer, kind, at: this.clock.now() };
    if (code !== undefined) ev.code = code;
    if (boot !== undefined) ev.boot = boot;
    this.emitter.emit("connection", ev);
  }

  // ---- ConnectionHost ----------------------------------------------------------------------

  /**
   * May an inbound connection from `hello.from` become the connection to it? Pure: nothing is
   * replaced until the dialer has proved it holds the session key (see opened()).
   * Simultaneous dial: both sides keep the connection dialed by the smaller id — while our own dial
   * has reached the peer (its HELLO may be on the way). A HELLO from a restarted peer (new boot
   * id) wins over the connection we had to its old incarnation.
   */
  admit(_conn: TcpConnection, hello: { from: NodeId; boot: string }): boolean {
    if (this.state !== "started") return false;
    const p = this.peer(hello.from);
    if (!(this.id < hello.from)) return true;
    if (p.dial?.tcpConnected) return false;
    return !(p.conn && p.conn.dir === "out" && p.conn.peerBoot === hello.boot);
  }

  opened(conn: TcpConnection): void {
    this.pendingInbound.delete(conn);
    const p = this.peer(conn.peer!);
    if (conn.dir === "in") {
      // Re-check now that the dialer is authenticated: our own dial may have won meanwhile.
      if (!this.admit(conn, { from: p.id, boot: conn.peerBoot ?? "" })) {
        conn.superseded = true;
        conn.destroy();
        return;
      }
      if (conn.peerAddress && !p.pinned) p.addr = conn.peerAddress;
    }
    for (const old of [p.dial, p.conn]) {
      if (old && old !== conn) {
        old.superseded = true;
        old.destroy();
      }
    }
    p.dial = undefined;
    p.retry?.cancel();
    p.retry = undefined;
    p.conn = conn;
    p.backoffMs = this.o.reconnectInitialMs;
    this.emitConnection(p.id, "connected", undefined, conn.peerBoot);
    if (p.queue.length > 0) this.scheduleFlush(p);
  }

  messages(conn: TcpConnection, messages: Buffer[]): void {
    const from = conn.peer!;
    for (const m of messages) {
      let msg: unknown;
      try {
        msg = decode(m);
      } catch (e) {
        this.badFrame(conn, e as FrameError);
        continue;
      }
      this.counters.received++;
      this.counters.bytesReceived += m.length;
      this.emitter.emit("message", from, msg);
    }
  }

  badFrame(conn: TcpConnection, err: FrameError, closeReason?: string): void {
    bump(this.counters.badFrames, err.reason);
    if (err.reason === "peer-closed") {
      // An authenticated Close: a frame of ours failed the peer's check. Evidence about the path
      // to it as good as a damaged frame of its own (the only kind a one-way fault gives us), when
      // the reason is damage; an oversized frame or an unknown type is a configuration or version
      // mismatch.
      const damage = DAMAGE.has(closeReason ?? "");
      if (damage)
        this.emitter.emit("integrity", { peer: conn.peer!, reason: err.reason, at: this.clock.now() });
      if (this.badFrameLog.take(`closed:${conn.peer}`) >= 0)
        this.log.warn(
          { peer: conn.peer, reason: closeReason },
          damage ? `${err.message}; our frames reach it damaged` : err.message,
        );
      return;
    }
    // Evidence of a damaged path: frames that failed the check on an open connection, or a HELLO
    // reply that failed its MAC or header check on a connection we dialed (we know whom). Not a
    // payload that passed its MAC but does not decode, an oversized frame or an unknown type (a
    // software or configuration mismatch: the header's check passed), nor anything on a
    // connection whose dialer has not yet proved it holds the key (confirming): a recorded HELLO
    // replayed, then garbage, would make evidence against the node that sent the HELLO.
    const damage =
      conn.state === "open"
        ? DAMAGE.has(err.reason)
        : // Before the handshake completes, bad magic or another version is something else
          // listening there (misconfiguration), not a damaged faultline frame.
          conn.dir === "out" && (err.reason === "bad-mac" || err.reason === "bad-check");
    if (damage && conn.peer !== undefined) {
      this.emitter.emit("integrity", { peer: conn.peer, reason: err.reason, at: this.clock.now() });
    }
    const who = conn.state === "open" ? `peer:${conn.peer}` : `addr:${conn.remote}`;
    const suppressed = this.badFrameLog.take(who);
    if (suppressed >= 0) {
      this.log.warn(
        { from: who, reason: err.reason, suppressed },
        `dropped a bad frame: ${err.message}; the connection is closed`,
      );
    }
  }

  handshakeFailed(conn: TcpConnection, why: string): void {
    bump(this.counters.badFrames, "handshake");
    if (this.badFrameLog.take(`handshake:${conn.remote}`) >= 0) {
      this.log.warn({ remote: conn.remote, peer: conn.peer }, `handshake failed: ${why}`);
    }
  }

  drained(conn: TcpConnection): void {
    const p = conn.peer ? this.peerMap.get(conn.peer) : undefined;
    if (p && p.conn === conn) this.scheduleFlush(p);
  }

  ended(conn: TcpConnection, kind: ConnectionEventKind, code?: string): void {
    this.pendingInbound.delete(conn);
    if (conn.superseded || conn.peer === undefined || this.state !== "started") return;
    const p = this.peerMap.get(conn.peer);
    if (!p) return;
    if (p.conn === conn) {
      p.conn = undefined;
      this.emitConnection(p.id, kind, code);
      this.scheduleRetry(p);
    } else if (p.dial === conn) {
      p.dial = undefined;
      // A fresh dial to replace a stalled connection that did not succeed: the old connection is
      // still the one that counts, and a path still down is no news — but a refusal is (nothing
      // listens there any more: the peer's process is gone).
      if (conn.refresh && p.conn) {
        if (kind === "refused") this.emitConnection(p.id, kind, code);
        return;
      }
      // A dial the peer accepted and then closed cleanly during the handshake is no evidence of
      // failure: that is how the peer turns down our side of a simultaneous dial.
      if (!(kind === "closed" && code === undefined && conn.tcpConnected))
        this.emitConnection(p.id, kind, code);
      this.scheduleRetry(p);
    }
  }
}
