import type { NodeId, Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { Rng } from "../runtime/rng.ts";

/**
 * A toy protocol that exercises transports and the simulator: every `intervalMs` a node pings a
 * peer (round robin over a shuffled list) and the peer answers with a pong carrying the ping's
 * timestamp, which gives an RTT. It is the workload behind the fault tests, the simulator bench and
 * the live view of `faultline up` until detection takes over.
 */
export interface PingOptions {
  intervalMs?: number;
  /** Extra bytes carried by each ping (to load a link). */
  payloadBytes?: number;
  /** Ping only these peers (default: every other node). */
  targets?: readonly NodeId[];
  /** How many pings per tick (default 1). */
  burst?: number;
}

export const PING_DEFAULTS = { intervalMs: 1000, payloadBytes: 0, burst: 1 } as const;

export interface PingMessage {
  t: "ping";
  /** The sender's epoch: random per incarnation, so pongs to an earlier life are recognised. */
  e: number;
  seq: number;
  at: number;
  pad?: Uint8Array;
}
export interface PongMessage {
  t: "pong";
  e: number;
  seq: number;
  at: number;
}

export interface PeerView {
  /** Last measured RTT (ms). */
  rtt: number | undefined;
  /** Monotonic time a pong was last received. */
  lastPong: number | undefined;
  pings: number;
  pongs: number;
}

export interface PingDeps {
  id: NodeId;
  peers: readonly NodeId[];
  clock: Clock;
  rng: Rng;
  transport: Transport;
  /** Optional stable storage: the boot counter survives restarts there. */
  store?: { get<T>(k: string): T | undefined; put(k: string, v: unknown): void };
}

export interface PingObserver {
  pinged?(to: NodeId, seq: number, at: number): void;
  ping?(from: NodeId, seq: number): void;
  pong?(from: NodeId, seq: number, rtt: number, at: number): void;
}

/** A well-formed ping or pong (its type `t`, the sender's epoch, seq and timestamp). */
function isPingOf<T extends PingMessage | PongMessage>(t: T["t"], m: unknown): m is T {
  const p = m as T;
  return (
    typeof m === "object" &&
    m !== null &&
    p.t === t &&
    Number.isSafeInteger(p.e) &&
    Number.isSafeInteger(p.seq) &&
    typeof p.at === "number"
  );
}
const isPing = (m: unknown): m is PingMessage => isPingOf<PingMessage>("ping", m);
const isPong = (m: unknown): m is PongMessage => isPingOf<PongMessage>("pong", m);

export class PingNode {
  readonly id: NodeId;
  /** Volatile: restarts at 0 with the process. */
  nextSeq = 0;
  /** Sent ping timestamps by seq (volatile), so that pongs can be checked against what was sent. */
  readonly sent = new Map<number, { to: NodeId; at: number }>();
  readonly view = new Map<NodeId, PeerView>();
  /** Persisted boot counter (stable storage), or 1 without a store. */
  boots = 1;
  /** Random per incarnation; pongs carry it back. */
  readonly epoch: number;
  malformed = 0;
  /** Pongs for an earlier incarnation's pings (ignored). */
  stale = 0;
  observer: PingObserver = {};

  private readonly opts: Required<Omit<PingOptions, "targets">>;
  private readonly order: NodeId[];
  private cursor = 0;
  private timer: Timer | undefined;
  private unsubscribe: (() => void) | undefined;
  private pad: Uint8Array | undefined;

  constructor(
    private readonly deps: PingDeps,
    options: PingOptions = {},
  ) {
    this.id = deps.id;
    this.opts = {
      intervalMs: options.intervalMs ?? PING_DEFAULTS.intervalMs,
      payloadBytes: options.payloadBytes ?? PING_DEFAULTS.payloadBytes,
      burst: options.burst ?? PING_DEFAULTS.burst,
    };
    const targets = options.targets ?? deps.peers.filter((p) => p !== deps.id);
    this.epoch = deps.rng.u32();
    this.order = deps.rng.shuffle([...targets]);
    for (const p of targets) this.view.set(p, { rtt: undefined, lastPong: undefined, pings: 0, pongs: 0 });
    if (this.opts.payloadBytes > 0) this.pad = deps.rng.bytes(this.opts.payloadBytes);
  }

  start(): void {
    if (this.deps.store) {
      this.boots = (this.deps.store.get<number>("boots") ?? 0) + 1;
      this.deps.store.put("boots", this.boots);
    }
    this.unsubscribe = this.deps.transport.on("message", (from, m) => this.receive(from, m));
    this.schedule(this.deps.rng.range(0, this.opts.intervalMs));
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.unsubscribe?.();
  }

  private schedule(delay: number): void {
    this.timer = this.deps.clock.setTimer(delay, () => this.tick());
  }

  private tick(): void {
    for (let i = 0; i < this.opts.burst && this.order.length > 0; i++) {
      const to = this.order[this.cursor++ % this.order.length]!;
      this.pingPeer(to);
    }
    this.schedule(this.opts.intervalMs);
  }

  pingPeer(to: NodeId): void {
    const seq = this.nextSeq++;
    const at = this.deps.clock.now();
    const msg: PingMessage = { t: "ping", e: this.epoch, seq, at };
    if (this.pad) msg.pad = this.pad;
    this.sent.set(seq, { to, at });
    if (this.sent.size > 4096) this.sent.delete(this.sent.keys().next().value!);
    const v = this.view.get(to);
    if (v) v.pings++;
    this.observer.pinged?.(to, seq, at);
    this.deps.transport.send(to, msg);
  }

  private receive(from: NodeId, m: unknown): void {
    if (isPing(m)) {
      this.observer.ping?.(from, m.seq);
      const pong: PongMessage = { t: "pong", e: m.e, seq: m.seq, at: m.at };
      this.deps.transport.send(from, pong);
    } else if (isPong(m)) {
      if (m.e !== this.epoch) {
        this.stale++;
        return;
      }
      const rtt = this.deps.clock.now() - m.at;
      const v = this.view.get(from);
      if (v) {
        v.rtt = rtt;
        v.lastPong = this.deps.clock.now();
        v.pongs++;
      }
      this.observer.pong?.(from, m.seq, rtt, m.at);
    } else {
      this.malformed++;
    }
  }
}
