import type { Logger } from "pino";
import type { LinkConditions } from "../net/sim-link.ts";
import { SimNetwork } from "../net/sim-network.ts";
import { SimTransport } from "../net/sim-transport.ts";
import type { NodeId } from "../net/transport.ts";
import type { Clock } from "../runtime/clock.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import { createRng, type Rng } from "../runtime/rng.ts";
import { VirtualClock } from "../runtime/virtual-clock.ts";
import { MemoryStore } from "./memory-store.ts";
import { GatedClock, NodeGate } from "./node-gate.ts";
import { Trace } from "./trace.ts";

/** What a simulated node is built from. The same protocol code runs on TcpTransport and RealClock. */
export interface SimContext {
  id: NodeId;
  /** Every node id in the simulation, this one included. */
  nodes: readonly NodeId[];
  clock: Clock;
  rng: Rng;
  transport: SimTransport;
  /** Stable storage: survives crash and restart. */
  store: MemoryStore;
  /** 0 for the first start, +1 per restart. */
  incarnation: number;
  /** The host the node runs on (see SimulationOptions.hosts). */
  host: string;
  trace(what: string): void;
  logger: Logger;
}

export interface SimNode {
  start?(): void;
  /** Orderly stop (the simulation ending); a crash does not call it. */
  stop?(): void;
}

export interface Invariant<N extends SimNode> {
  name: string;
  /** Return a description of the violation, or undefined when the invariant holds. */
  check(sim: Simulation<N>): string | undefined;
}

export interface SimulationOptions<N extends SimNode> {
  seed: number;
  /** A node count (ids n1..nN) or explicit ids. */
  nodes: number | readonly NodeId[];
  create(ctx: SimContext): N;
  network?: Partial<LinkConditions>;
  invariants?: readonly Invariant<N>[];
  clusterKey?: Uint8Array;
  /** Keep every trace line in memory (for printing); the hash is always kept. */
  keepTrace?: boolean;
  /** Trace individual frame deliveries (default true; large runs may turn it off). */
  traceFrames?: boolean;
  /**
   * Which host each node runs on (default: a host of its own). A host crash takes down every node
   * on the host; restarting any of them brings the host back with all of them.
   */
  hosts?: Record<NodeId, string>;
  /** The command that replays this run, printed on failure (`--seed N` is appended). */
  replay?: string;
  logger?: Logger;
}

export type NodeState = "up" | "paused" | "down";

interface Slot<N> {
  id: NodeId;
  store: MemoryStore;
  incarnation: number;
  gate: NodeGate;
  transport: SimTransport;
  instance: N | undefined;
}

export interface SimulationResult {
  seed: number;
  steps: number;
  virtualMs: number;
  traceHash: string;
  traceLines: number;
  frames: { sent: number; delivered: number; dropped: Record<string, number> };
  /** Scenario-specific measurements (e.g. false suspicions), summed by a swarm. */
  stats?: Record<string, number>;
}

/** An invariant failed: carries everything needed to replay it. */
export class SimulationFailure extends FaultlineError {
  constructor(
    readonly seed: number,
    readonly invariant: string,
    readonly violation: string,
    readonly atMs: number,
    readonly step: number,
    readonly replayCommand: string,
    readonly recentTrace: string[],
  ) {
    super(
      ErrorCode.Invariant,
      `invariant "${invariant}" violated at t=${atMs.toFixed(3)} ms (step ${step}, seed ${seed}): ${violation}\n` +
        `replay: ${replayCommand}`,
    );
    this.name = "SimulationFailure";
  }
}

export function nodeIds(n: number): NodeId[] {
  return Array.from({ length: n }, (_, i) => `n${i + 1}`);
}

/**
 * A deterministic cluster on virtual time. Each step runs exactly one event (a timer or a frame
 * delivery) and then checks every invariant. Randomness comes from the seed only, so the same seed
 * gives the same trace, byte for byte.
 */
export class Simulation<N extends SimNode> {
  readonly seed: number;
  readonly clock = new VirtualClock();
  readonly network: SimNetwork;
  readonly ids: readonly NodeId[];
  readonly trace: Trace;
  /** Randomness for fault schedules and test drivers (not shared with nodes or the network). */
  readonly rng: Rng;
  private readonly rootRng: Rng;
  private readonly slots = new Map<NodeId, Slot<N>>();
  private readonly key: Uint8Array;
  private readonly log: Logger;
  private steps = 0;
  private readonly downHosts = new Set<string>();
  private readonly lifecycle: Array<(e: { kind: "crash" | "restart"; id: NodeId; host: boolean }) => void> =
    [];
  private started = false;

  constructor(private readonly options: SimulationOptions<N>) {
    this.seed = options.seed >>> 0;
    this.rootRng = createRng(this.seed);
    this.rng = this.rootRng.fork("faults");
    this.ids = typeof options.nodes === "number" ? nodeIds(options.nodes) : [...options.nodes];
    if (new Set(this.ids).size !== this.ids.length) {
      throw new FaultlineError(ErrorCode.BadArgument, "simulation node ids must be unique");
    }
    this.log = options.logger ?? silentLogger();
    this.trace = new Trace(200, options.keepTrace ?? false);
    this.network = new SimNetwork(this.clock, this.rootRng.fork("network"), {
      ...(options.network ? { defaults: options.network } : {}),
      logger: this.log,
    });
    this.key = options.clusterKey ?? new Uint8Array(32).fill(0x5a);
    if (options.traceFrames ?? true) {
      this.network.observer = {
        delivered: (from, to, bytes) => this.write(`deliver ${from}>${to} ${bytes.length}B ${tag(bytes)}`),
        dropped: (from, to, reason) => this.write(`drop ${from}>${to} ${reason}`),
      };
    }
  }

  /** Create and start every node. */
  start(): this {
    if (this.started) return this;
    this.started = true;
    for (const id of this.ids) this.boot(id, new MemoryStore(), 0);
    this.check();
    return this;
  }

  // ---- inspection --------------------------------------------------------------------------

  /** The live instance of a node (undefined while it is crashed). */
  node(id: NodeId): N | undefined {
    return this.slots.get(id)?.instance;
  }

  /** Every live instance with its id. */
  live(): Array<[NodeId, N]> {
    const out: Array<[NodeId, N]> = [];
    for (const s of this.slots.values()) if (s.instance) out.push([s.id, s.instance]);
    return out;
  }

  state(id: NodeId): NodeState {
    return this.slot(id).gate.state;
  }

  incarnation(id: NodeId): number {
    return this.slot(id).incarnation;
  }

  store(id: NodeId): MemoryStore {
    return this.slot(id).store;
  }

  transport(id: NodeId): SimTransport {
    return this.slot(id).transport;
  }

  now(): number {
    return this.clock.now();
  }

  get stepCount(): number {
    return this.steps;
  }

  // ---- faults ------------------------------------------------------------------------------

  /**
   * Crash a node: its volatile state is gone, everything in flight to it is dropped. With
   * `host: true` its whole host is gone (nothing answers); otherwise the host refuses connections.
   */
  crash(id: NodeId, options: { host?: boolean } = {}): void {
    const targets = options.host ? this.coHosted(id) : [id];
    if (options.host) this.downHosts.add(this.hostOf(id));
    for (const t of targets) {
      const s = this.slot(t);
      if (s.gate.state === "down") continue;
      s.gate.kill(!options.host);
      s.instance = undefined;
      this.write(`fault crash ${t}${options.host ? " host" : ""}`);
      for (const fn of this.lifecycle) fn({ kind: "crash", id: t, host: options.host ?? false });
    }
  }

  /** Restart a crashed node (with its whole host, if the host went down): new incarnations. */
  restart(id: NodeId): void {
    const host = this.hostOf(id);
    const targets = this.downHosts.delete(host) ? this.coHosted(id) : [id];
    for (const t of targets) {
      const s = this.slot(t);
      if (s.gate.state !== "down") continue;
      this.write(`fault restart ${t}`);
      this.boot(t, s.store, s.incarnation + 1);
      for (const fn of this.lifecycle) fn({ kind: "restart", id: t, host: false });
    }
  }

  /** Be told of every crash and restart (a host agent's view of its local processes). */
  onLifecycle(fn: (e: { kind: "crash" | "restart"; id: NodeId; host: boolean }) => void): void {
    this.lifecycle.push(fn);
  }

  hostOf(id: NodeId): string {
    return this.options.hosts?.[id] ?? `host:${id}`;
  }

  private coHosted(id: NodeId): NodeId[] {
    const h = this.hostOf(id);
    return this.ids.filter((x) => this.hostOf(x) === h);
  }

  /** Freeze a node: it neither runs timers nor handles frames until resumed, then catches up. */
  pause(id: NodeId): void {
    const s = this.slot(id);
    if (s.gate.state !== "up") return;
    s.gate.pause();
    this.write(`fault pause ${id}`);
  }

  resume(id: NodeId): void {
    const s = this.slot(id);
    if (s.gate.state !== "paused") return;
    this.write(`fault resume ${id}`);
    s.gate.resume();
  }

  /** Run `fn` at virtual time `atMs` as its own step (fault schedules, test drivers). */
  at(atMs: number, label: string, fn: () => void): void {
    this.clock.setTimer(Math.max(0, atMs - this.clock.now()), () => {
      this.write(`at ${label}`);
      fn();
    });
  }

  // ---- running -----------------------------------------------------------------------------

  /** Run one event and check the invariants. Returns false when nothing is left to run. */
  step(): boolean {
    if (!this.started) this.start();
    let ran: boolean;
    try {
      ran = this.clock.step();
    } catch (e) {
      // A node's code threw out of an event (a timer, a delivery, a restart): a failure of this
      // seed like any other, with its replay command, not the end of a whole swarm.
      if (e instanceof SimulationFailure) throw e;
      this.steps++;
      this.fail("no exception escapes a node", e instanceof Error ? (e.stack ?? e.message) : String(e));
    }
    if (!ran) return false;
    this.steps++;
    this.check();
    return true;
  }

  /** Run every event due up to virtual time `t` (ms), checking invariants after each. */
  runUntil(t: number): this {
    if (!this.started) this.start();
    for (;;) {
      const next = this.clock.nextAt();
      if (next === undefined || next > t) break;
      this.step();
    }
    this.clock.advanceTo(t);
    return this;
  }

  runFor(ms: number): this {
    return this.runUntil(this.clock.now() + ms);
  }

  /** Stop every live node in an orderly way (end of run). */
  finish(): SimulationResult {
    for (const s of this.slots.values()) s.instance?.stop?.();
    return this.result();
  }

  result(): SimulationResult {
    const c = this.network.counters;
    return {
      seed: this.seed,
      steps: this.steps,
      virtualMs: this.clock.now(),
      traceHash: this.trace.digest(),
      traceLines: this.trace.lines,
      frames: { sent: c.sent, delivered: c.delivered, dropped: { ...c.dropped } },
    };
  }

  /** Fail the run now, as an invariant would (for checks made outside the per-step invariants). */
  fail(invariant: string, violation: string): never {
    throw new SimulationFailure(
      this.seed,
      invariant,
      violation,
      this.clock.now(),
      this.steps,
      this.replayCommand(),
      // With the whole trace kept (--trace), a failure shows all of it.
      this.trace.allLines() ?? this.trace.tail(40),
    );
  }

  replayCommand(): string {
    return `${this.options.replay ?? "npm run sim --"} --seed ${this.seed}`;
  }

  // ---- internals ---------------------------------------------------------------------------

  private write(what: string): void {
    this.trace.write(this.clock.now(), what);
  }

  private slot(id: NodeId): Slot<N> {
    const s = this.slots.get(id);
    if (!s) throw new FaultlineError(ErrorCode.UnknownPeer, `no simulated node "${id}"`);
    return s;
  }

  private boot(id: NodeId, store: MemoryStore, incarnation: number): void {
    const gate = new NodeGate(this.clock);
    const clock = new GatedClock(this.clock, gate);
    const transport = new SimTransport({ id, network: this.network, clusterKey: this.key, gate, clock });
    void transport.start();
    const slot: Slot<N> = { id, store, incarnation, gate, transport, instance: undefined };
    this.slots.set(id, slot);
    const ctx: SimContext = {
      id,
      nodes: this.ids,
      clock,
      rng: this.rootRng.fork(`node:${id}:${incarnation}`),
      transport,
      store,
      incarnation,
      host: this.hostOf(id),
      trace: (what) => this.write(`${id} ${what}`),
      logger: this.log.child({ node: id }),
    };
    slot.instance = this.options.create(ctx);
    slot.instance.start?.();
  }

  private check(): void {
    for (const inv of this.options.invariants ?? []) {
      const violation = inv.check(this);
      if (violation !== undefined) this.fail(inv.name, violation);
    }
  }
}

/** A short, content-dependent tag for a frame in the trace (its MAC's first bytes). */
function tag(bytes: Uint8Array): string {
  let s = "";
  for (let i = Math.max(0, bytes.length - 16); i < Math.max(0, bytes.length - 12); i++) {
    s += bytes[i]!.toString(16).padStart(2, "0");
  }
  return s;
}
