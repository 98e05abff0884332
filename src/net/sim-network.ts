import type { Logger } from "pino";
import type { Timer } from "../runtime/clock.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import type { Rng } from "../runtime/rng.ts";
import type { VirtualClock } from "../runtime/virtual-clock.ts";
import { DEFAULT_LINK, type LinkConditions, type LinkState, routeFrame } from "./sim-link.ts";
import type { NodeId } from "./transport.ts";

/**
 * How a simulated node takes delivery. The simulator puts a gate in front of each node so that a
 * crashed node drops what arrives and a paused one holds it until it resumes.
 */
export interface Gate {
  /** "up": run now; "paused": hold and run on resume; "down": drop. */
  readonly state: "up" | "paused" | "down";
  /** Whether the node's host is up: a down process on an up host refuses connections. */
  readonly hostUp: boolean;
  run(fn: () => void): void;
}

export const OPEN_GATE: Gate = { state: "up", hostUp: true, run: (fn) => fn() };

/** What the network hands an endpoint. */
export interface EndpointSink {
  gate: Gate;
  /** A frame arrived from `from` (the network's truth about the sender). */
  frame(from: NodeId, bytes: Uint8Array): void;
  /** A send to `to` was refused (its process is down, its host up). */
  refused(to: NodeId): void;
}

export interface NetworkObserver {
  /** Called for every frame handed to a node (after corruption, before the frame check). */
  delivered?(from: NodeId, to: NodeId, bytes: Uint8Array): void;
  dropped?(from: NodeId, to: NodeId, reason: string): void;
}

export interface SimNetworkStats {
  sent: number;
  delivered: number;
  dropped: Record<string, number>;
  corrupted: number;
  duplicated: number;
}

/**
 * An in-process network on virtual time. Every directed link has conditions (delay, jitter, loss,
 * duplication, reordering, corruption, a bandwidth bottleneck with a finite queue) and can be
 * blocked (partitions, one-way partitions, flapping). Frames are real bytes: the receiving
 * transport runs the same frame check it runs over TCP.
 */
export class SimNetwork {
  private readonly sinks = new Map<NodeId, EndpointSink>();
  private defaults: LinkConditions;
  private readonly overrides = new Map<string, LinkConditions>();
  private readonly linkState = new Map<string, LinkState>();
  /** Directed links that are down, with how many faults hold each one down (faults may overlap). */
  private readonly blocked = new Map<string, number>();
  private readonly flaps = new Set<Timer>();
  private readonly log: Logger;
  readonly counters: SimNetworkStats = { sent: 0, delivered: 0, dropped: {}, corrupted: 0, duplicated: 0 };
  observer: NetworkObserver = {};

  constructor(
    readonly clock: VirtualClock,
    private readonly rng: Rng,
    options: { defaults?: Partial<LinkConditions>; logger?: Logger } = {},
  ) {
    this.defaults = { ...DEFAULT_LINK, ...options.defaults };
    this.log = (options.logger ?? silentLogger()).child({ component: "sim-network" });
  }

  // ---- endpoints ---------------------------------------------------------------------------

  /** Attach (or re-attach, after a restart) the receiving side of node `id`. */
  attach(id: NodeId, sink: EndpointSink): void {
    this.sinks.set(id, sink);
  }

  detach(id: NodeId, sink: EndpointSink): void {
    if (this.sinks.get(id) === sink) this.sinks.delete(id);
  }

  has(id: NodeId): boolean {
    return this.sinks.has(id);
  }

  nodes(): NodeId[] {
    return [...this.sinks.keys()];
  }

  // ---- conditions --------------------------------------------------------------------------

  setDefaults(c: Partial<LinkConditions>): void {
    this.defaults = { ...this.defaults, ...c };
  }

  /** Set conditions on the directed link from→to (and to→from unless `oneWay`). */
  setLink(from: NodeId, to: NodeId, c: Partial<LinkConditions>, options: { oneWay?: boolean } = {}): void {
    const apply = (a: NodeId, b: NodeId) => this.overrides.set(key(a, b), { ...this.conditions(a, b), ...c });
    apply(from, to);
    if (!options.oneWay) apply(to, from);
  }

  resetLink(from: NodeId, to: NodeId, options: { oneWay?: boolean } = {}): void {
    this.overrides.delete(key(from, to));
    if (!options.oneWay) this.overrides.delete(key(to, from));
  }

  resetAllLinks(): void {
    this.overrides.clear();
  }

  conditions(from: NodeId, to: NodeId): LinkConditions {
    return this.overrides.get(key(from, to)) ?? this.defaults;
  }

  /** Block every link between two sides (from `sides[i]` to `sides[j]`, i != j). */
  /** With `oneWay`, only links from an earlier side to a later one are blocked. */
  partition(sides: readonly (readonly NodeId[])[], options: { oneWay?: boolean } = {}): void {
    this.eachCut(sides, options.oneWay ?? false, (a, b) => this.block(a, b, { oneWay: true }));
  }

  /** Undo one partition() with the same arguments. */
  unpartition(sides: readonly (readonly NodeId[])[], options: { oneWay?: boolean } = {}): void {
    this.eachCut(sides, options.oneWay ?? false, (a, b) => this.unblock(a, b, { oneWay: true }));
  }

  private eachCut(
    sides: readonly (readonly NodeId[])[],
    oneWay: boolean,
    fn: (a: NodeId, b: NodeId) => void,
  ): void {
    for (let i = 0; i < sides.length; i++) {
      for (let j = 0; j < sides.length; j++) {
        if (i === j || (oneWay && j < i)) continue;
        for (const a of sides[i]!) for (const b of sides[j]!) fn(a, b);
      }
    }
  }

  block(from: NodeId, to: NodeId, options: { oneWay?: boolean } = {}): void {
    const k = key(from, to);
    this.blocked.set(k, (this.blocked.get(k) ?? 0) + 1);
    if (!options.oneWay) this.block(to, from, { oneWay: true });
  }

  unblock(from: NodeId, to: NodeId, options: { oneWay?: boolean } = {}): void {
    const k = key(from, to);
    const n = (this.blocked.get(k) ?? 0) - 1;
    if (n > 0) this.blocked.set(k, n);
    else this.blocked.delete(k);
    if (!options.oneWay) this.unblock(to, from, { oneWay: true });
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.has(key(from, to));
  }

  /** Remove every partition and block, and stop every flap. */
  heal(): void {
    this.blocked.clear();
    for (const t of this.flaps) t.cancel();
    this.flaps.clear();
  }

  /**
   * Make the link between a and b flap: down for `downMs`, up for `upMs`, `cycles` times (or until
   * heal()). Returns a function that stops the flapping and leaves the link up.
   */
  flap(a: NodeId, b: NodeId, options: { upMs: number; downMs: number; cycles?: number }): () => void {
    let remaining = options.cycles ?? Number.POSITIVE_INFINITY;
    let timer: Timer | undefined;
    let isDown = false;
    const setDown = (d: boolean) => {
      if (d && !isDown) this.block(a, b);
      if (!d && isDown) this.unblock(a, b);
      isDown = d;
    };
    const stop = () => {
      if (timer) {
        timer.cancel();
        this.flaps.delete(timer);
      }
      timer = undefined;
      setDown(false);
    };
    const down = () => {
      if (remaining-- <= 0) return stop();
      setDown(true);
      arm(options.downMs, up);
    };
    const up = () => {
      setDown(false);
      arm(options.upMs, down);
    };
    const arm = (ms: number, fn: () => void) => {
      if (timer) this.flaps.delete(timer);
      timer = this.clock.setTimer(ms, fn);
      this.flaps.add(timer);
    };
    down();
    return stop;
  }

  // ---- transmission ------------------------------------------------------------------------

  /** Put a frame on the wire from `from` to `to`. */
  transmit(from: NodeId, to: NodeId, bytes: Uint8Array): void {
    const dest = this.sinks.get(to);
    if (!dest) {
      throw new FaultlineError(ErrorCode.UnknownPeer, `the simulated network has no node "${to}"`);
    }
    this.counters.sent++;
    if (this.blocked.has(key(from, to))) {
      this.drop(from, to, "link-down");
      return;
    }
    const k = key(from, to);
    let st = this.linkState.get(k);
    if (!st) {
      st = { busyUntil: 0, lastArrival: 0 };
      this.linkState.set(k, st);
    }
    const now = this.clock.now();
    const fate = routeFrame(this.conditions(from, to), st, now, bytes.length, this.rng);
    if (fate.kind === "drop") {
      this.drop(from, to, fate.reason);
      return;
    }
    let payload = bytes;
    if (fate.corrupt) {
      payload = flipBits(bytes, this.rng);
      this.counters.corrupted++;
    }
    if (fate.at.length > 1) this.counters.duplicated++;
    for (const at of fate.at) this.clock.setTimer(at - now, () => this.arrive(from, to, payload));
  }

  private arrive(from: NodeId, to: NodeId, bytes: Uint8Array): void {
    // A partition that began while the frame was in flight catches it too.
    if (this.blocked.has(key(from, to))) {
      this.drop(from, to, "link-down");
      return;
    }
    const dest = this.sinks.get(to);
    if (!dest || dest.gate.state === "down") {
      this.drop(from, to, "dest-down");
      if (dest?.gate.hostUp) this.refuse(from, to);
      return;
    }
    this.counters.delivered++;
    this.observer.delivered?.(from, to, bytes);
    dest.gate.run(() => dest.frame(from, bytes));
  }

  /** The destination's kernel answers with a refusal, which travels back over the reverse link. */
  private refuse(from: NodeId, to: NodeId): void {
    if (this.blocked.has(key(to, from))) return;
    const c = this.conditions(to, from);
    this.clock.setTimer(c.delayMs, () => {
      const src = this.sinks.get(from);
      if (src && src.gate.state !== "down") src.gate.run(() => src.refused(to));
    });
  }

  private drop(from: NodeId, to: NodeId, reason: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    this.observer.dropped?.(from, to, reason);
    if (reason === "queue-overflow") this.log.trace({ from, to }, "bottleneck queue full: frame dropped");
  }
}

function key(a: NodeId, b: NodeId): string {
  return `${a}\u0000${b}`;
}

function flipBits(bytes: Uint8Array, rng: Rng): Uint8Array {
  const out = Uint8Array.from(bytes);
  const flips = 1 + rng.int(3);
  for (let i = 0; i < flips; i++) {
    const bit = rng.int(out.length * 8);
    out[bit >> 3]! ^= 1 << (bit & 7);
  }
  return out;
}
