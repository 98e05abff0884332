import type { NodeId } from "../net/transport.ts";

/**
 * Leases and fences: how a `host-crash` becomes certain.
 *
 * A silent host may be dead, or alive and cut off; nothing a peer observes tells these apart. So
 * the alive-but-cut-off host is made to stop acting on its own:
 *
 *  - Every host agent holds a **cluster lease** from a fixed set of *witnesses* (cluster members
 *    named in the configuration, the same list everywhere; an odd number, typically 3 or 5). It
 *    renews every `leaseMs / 4` by asking all witnesses; a round that a majority grants extends
 *    the lease to `(time the round was sent) + leaseMs`, on the agent's own monotonic clock.
 *  - The agent's processes hold **process leases** from their agent, never longer than the
 *    agent's own lease has left. A process whose lease ends stops acting (the client's fence
 *    hook); an agent whose lease ends kills its registered processes and starts a new epoch.
 *  - A member that has found a host silent (SWIM declared it dead: `host-crash`, suspected) asks
 *    the witnesses to **fence** the host's agent. A witness that fences a holder refuses, from
 *    then on, every epoch of it that it had granted, and refuses epochs it has never seen for
 *    `fenceBound` (they may be old ones). Once a majority has fenced, no round of an old epoch can
 *    gather a majority again (any two majorities share a witness), so each old epoch's lease ends
 *    at most `leaseMs` (agent clock) after the fence: after `fenceBound` more on the observer's
 *    clock the host is *certainly* not acting, and the report becomes `certain`.
 *  - A witness keeps its fences in memory only: after a (re)start it grants nothing for
 *    `fenceBound`, by which time every lease any earlier life of it granted has ended.
 *
 * Clock assumptions (docs/ARCHITECTURE.md, "Leases and fences"): every monotonic clock advances at
 * real-time rate within a factor `1 ± driftRate`, including while a process is stopped (SIGSTOP)
 * — Linux CLOCK_MONOTONIC does; a virtual machine that is suspended with its clock stopped does
 * not, and must not run agents with fencing on. A process checks its lease before it acts.
 * No clock is compared across machines: every duration is measured on one clock.
 */

export const FENCING_DEFAULTS = {
  /** The cluster lease (agent ← witnesses) (ms). */
  leaseMs: 4000,
  /** The process lease (process ← agent) (ms); at most half the cluster lease. */
  processLeaseMs: 1000,
  /** Bound on any clock's rate error (1%: far above what NTP-disciplined clocks do). */
  driftRate: 0.01,
  /** Time to act on an expired lease (kill the processes) (ms). */
  marginMs: 100,
} as const;

export interface FencingConfig {
  /** The members that grant leases and record fences. */
  witnesses: readonly NodeId[];
  leaseMs: number;
  processLeaseMs: number;
  driftRate: number;
  marginMs: number;
}

export function fencingConfig(o: Partial<FencingConfig> & { witnesses: readonly NodeId[] }): FencingConfig {
  const c = { ...FENCING_DEFAULTS, ...o };
  if (c.witnesses.length === 0) throw new Error("fencing needs at least one witness");
  if (new Set(c.witnesses).size !== c.witnesses.length) throw new Error("fencing witnesses must be distinct");
  if (!(c.leaseMs > 0) || !(c.processLeaseMs > 0) || c.processLeaseMs * 2 > c.leaseMs)
    throw new Error("fencing needs leaseMs > 0 and 0 < processLeaseMs <= leaseMs / 2");
  if (!(c.driftRate >= 0 && c.driftRate < 0.5)) throw new Error("fencing driftRate must be in [0, 0.5)");
  if (!(c.marginMs >= 0)) throw new Error("fencing marginMs must be >= 0");
  return c;
}

/**
 * How long after a moment T (on the waiting member's clock) every lease whose last successful
 * renewal was sent before T has surely ended and been acted on: the lease as the slowest clock
 * measures it, the processes' leases that it bounds, the kill, read on the fastest clock.
 */
export function fenceBound(c: FencingConfig): number {
  const r = c.driftRate;
  return Math.ceil((c.leaseMs * (1 + r) ** 2 + c.marginMs) / (1 - r));
}

export const majority = (n: number): number => Math.floor(n / 2) + 1;

/**
 * How long a witness refuses, after a fence, epochs it has never seen — and grants nothing after
 * a (re)start: two fence bounds. An observer accepts a majority of fences only if they all fell
 * within one fence bound of each other (FenceRequestCore), so each of them is still in force one
 * fence bound after the last: long enough for every old epoch to have lapsed.
 */
export function witnessWait(c: FencingConfig): number {
  return 2 * fenceBound(c);
}

export type LeaseMessage =
  | { p: "lease"; t: "renew"; epoch: string; round: number }
  | { p: "lease"; t: "grant"; epoch: string; round: number }
  | { p: "lease"; t: "refuse"; epoch: string; round: number; why: "fenced" | "wait" }
  | { p: "lease"; t: "fence"; holder: NodeId; req: number }
  | { p: "lease"; t: "fenced"; holder: NodeId; req: number };

const isShort = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export function isLeaseMessage(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "lease";
}

/** Validate a lease message completely; undefined when anything about it is malformed. */
export function parseLease(m: unknown): LeaseMessage | undefined {
  if (!isLeaseMessage(m)) return undefined;
  const x = m as Record<string, unknown>;
  switch (x.t) {
    case "renew":
    case "grant":
      return isShort(x.epoch) && isCount(x.round) ? (m as LeaseMessage) : undefined;
    case "refuse":
      return isShort(x.epoch) && isCount(x.round) && (x.why === "fenced" || x.why === "wait")
        ? (m as LeaseMessage)
        : undefined;
    case "fence":
    case "fenced":
      return isShort(x.holder) && isCount(x.req) ? (m as LeaseMessage) : undefined;
    default:
      return undefined;
  }
}

export type Send = { to: NodeId; msg: LeaseMessage };

/**
 * The lease holder's side (the host agent), sans I/O: the host calls `tick` every `renewEveryMs`
 * and passes in the witnesses' answers; it reads `holds(now)` and `remaining(now)`, and learns
 * from `receive` when a witness says this epoch is fenced.
 */
export class LeaseHolderCore {
  private heldUntil = Number.NEGATIVE_INFINITY;
  private round = 0;
  private readonly rounds = new Map<number, { sentAt: number; grants: Set<NodeId> }>();
  private fencedBy: NodeId | undefined;

  constructor(
    private readonly c: FencingConfig,
    readonly epoch: string,
  ) {}

  get renewEveryMs(): number {
    return this.c.leaseMs / 4;
  }

  /** Start a renewal round: ask every witness. */
  tick(now: number): Send[] {
    const round = ++this.round;
    this.rounds.set(round, { sentAt: now, grants: new Set() });
    // Rounds older than a lease can no longer extend it.
    for (const [r, v] of this.rounds) if (v.sentAt + this.c.leaseMs <= now) this.rounds.delete(r);
    return this.c.witnesses.map((to) => ({ to, msg: { p: "lease", t: "renew", epoch: this.epoch, round } }));
  }

  receive(now: number, from: NodeId, m: LeaseMessage): void {
    if ((m.t !== "grant" && m.t !== "refuse") || m.epoch !== this.epoch) return;
    if (!this.c.witnesses.includes(from)) return;
    // A lease that has lapsed stays lapsed: the epoch has stopped (or must stop) acting, and only
    // a new epoch may hold a lease again. Late grants cannot revive it.
    if (this.everHeld() && now >= this.heldUntil) return;
    if (m.t === "refuse") {
      if (m.why === "fenced") this.fencedBy ??= from;
      return;
    }
    const r = this.rounds.get(m.round);
    if (!r || this.fencedBy) return;
    r.grants.add(from);
    if (r.grants.size >= majority(this.c.witnesses.length)) {
      this.heldUntil = Math.max(this.heldUntil, r.sentAt + this.c.leaseMs);
      this.rounds.delete(m.round);
    }
  }

  /** Whether this epoch may act now. */
  holds(now: number): boolean {
    return this.fencedBy === undefined && now < this.heldUntil;
  }

  /** How long the lease has left (0 when not held). */
  remaining(now: number): number {
    return this.holds(now) ? this.heldUntil - now : 0;
  }

  /**
   * Whether this epoch ever held a lease. One that never did is not bound by one — nobody may
   * count on it stopping — and one that did and lost it never holds again.
   */
  everHeld(): boolean {
    return this.heldUntil > Number.NEGATIVE_INFINITY;
  }

  /** The witness that said this epoch is fenced, if one has. */
  get fenced(): NodeId | undefined {
    return this.fencedBy;
  }
}

/** Epochs remembered per holder (an agent starts a new one per life and per fence). */
const EPOCHS_KEPT = 16;

/**
 * The witness's side, sans I/O: answers renewals and fence requests. Holders are authenticated
 * cluster members (the transport checked the frame), so the tables are bounded by the cluster.
 */
export class WitnessCore {
  private readonly granted = new Map<NodeId, string[]>();
  private readonly fences = new Map<NodeId, { at: number; epochs: Set<string> }>();
  private readonly quarantineUntil: number;

  constructor(
    private readonly c: FencingConfig,
    startedAt: number,
  ) {
    // Fences are not kept across restarts: grant nothing until every lease an earlier life of
    // this witness granted has surely ended.
    this.quarantineUntil = startedAt + witnessWait(c);
  }

  receive(now: number, from: NodeId, m: LeaseMessage): Send | undefined {
    if (m.t === "renew") return { to: from, msg: this.renew(now, from, m.epoch, m.round) };
    if (m.t === "fence") {
      this.fence(now, m.holder);
      return { to: from, msg: { p: "lease", t: "fenced", holder: m.holder, req: m.req } };
    }
    return undefined;
  }

  private renew(now: number, holder: NodeId, epoch: string, round: number): LeaseMessage {
    const refuse = (why: "fenced" | "wait"): LeaseMessage => ({ p: "lease", t: "refuse", epoch, round, why });
    const f = this.fences.get(holder);
    if (f?.epochs.has(epoch)) return refuse("fenced");
    const known = this.granted.get(holder) ?? [];
    if (now < this.quarantineUntil) return refuse("wait");
    // An epoch never seen here, shortly after a fence, may be an old one that was granted only
    // by other witnesses: it gets nothing until any such lease has ended.
    if (f && !known.includes(epoch) && now < f.at + witnessWait(this.c)) return refuse("wait");
    if (!known.includes(epoch)) {
      known.push(epoch);
      if (known.length > EPOCHS_KEPT) known.shift();
      this.granted.set(holder, known);
    }
    return { p: "lease", t: "grant", epoch, round };
  }

  private fence(now: number, holder: NodeId): void {
    const f = this.fences.get(holder) ?? { at: now, epochs: new Set<string>() };
    f.at = now;
    for (const e of this.granted.get(holder) ?? []) f.epochs.add(e);
    while (f.epochs.size > EPOCHS_KEPT) f.epochs.delete(f.epochs.values().next().value as string);
    this.granted.delete(holder);
    this.fences.set(holder, f);
  }
}

/**
 * The observer's side, sans I/O: fence a holder at a majority of witnesses; `certainAt` is when
 * it has surely stopped acting (on this observer's clock). The fences of a majority must all be in
 * force together: a majority whose answers took longer than one fence bound from the request
 * (a witness fenced early may already be granting unseen epochs again) is not accepted, and the
 * witnesses are asked again, which renews every fence.
 */
export class FenceRequestCore {
  private req = 0;
  private readonly open = new Map<
    NodeId,
    { req: number; sentAt: number; acks: Set<NodeId>; done: number | undefined }
  >();

  constructor(private readonly c: FencingConfig) {}

  /** Ask (again) every witness that has not answered this request yet. */
  request(now: number, holder: NodeId): Send[] {
    let o = this.open.get(holder);
    if (!o) {
      o = { req: ++this.req, sentAt: now, acks: new Set(), done: undefined };
      this.open.set(holder, o);
    }
    if (o.done !== undefined) return [];
    const req = o.req;
    return this.c.witnesses
      .filter((w) => !o.acks.has(w))
      .map((to) => ({ to, msg: { p: "lease", t: "fence", holder, req } }));
  }

  /**
   * An answer. Returns the time the holder is surely fenced once a majority has answered in
   * time; `again` when the majority came too slowly (the caller asks anew at once).
   */
  receive(
    now: number,
    from: NodeId,
    m: LeaseMessage,
  ): { holder: NodeId; certainAt: number } | { holder: NodeId; again: true } | undefined {
    if (m.t !== "fenced" || !this.c.witnesses.includes(from)) return undefined;
    const o = this.open.get(m.holder);
    if (!o || o.req !== m.req || o.done !== undefined) return undefined;
    o.acks.add(from);
    if (o.acks.size < majority(this.c.witnesses.length)) return undefined;
    if (now - o.sentAt > fenceBound(this.c)) {
      this.open.delete(m.holder);
      return { holder: m.holder, again: true };
    }
    o.done = now + fenceBound(this.c);
    return { holder: m.holder, certainAt: o.done };
  }

  /** Forget a holder's fence (done, or it came back): a later silence needs a new fence. */
  forget(holder: NodeId): void {
    this.open.delete(holder);
  }
}
