import type { Address, NodeId } from "../net/transport.ts";
import type { Rng } from "../runtime/rng.ts";
import { GossipQueue } from "./gossip-queue.ts";
import { LocalHealth, suspicionTimeout } from "./local-health.ts";
import { type MemberStatus, parseSwim, type SwimMessage, type Update } from "./messages.ts";
import { Reachability, type ReachRow } from "./reachability.ts";
import {
  type Member,
  SWIM_DEFAULTS,
  type SwimConfig,
  type SwimCoreOptions,
  type SwimInput,
  type SwimOutput,
} from "./swim-types.ts";

function sameAddress(a: Address | undefined, b: Address): boolean {
  if (!a) return false;
  if ("path" in a || "path" in b) return "path" in a && "path" in b && a.path === b.path;
  return a.host === b.host && a.port === b.port;
}

/** How many periods in a row a path answered only indirectly is re-probed before the round goes on. */
const MAX_RECHECKS = 6;

/** Reachability rows piggybacked on one message (beside the membership updates). */
const ROWS_PER_MESSAGE = 2;

/** Pings sent by `ask` remembered at once, awaiting an ack. */
const MAX_ASKS = 16;

interface Probe {
  seq: number;
  target: NodeId;
  sentAt: number;
  acked: boolean;
  relays: number;
  nacks: number;
}

interface Relay {
  origin: NodeId;
  originSeq: number;
  target: NodeId;
}

interface Suspicion {
  inc: number;
  start: number;
  by: Set<NodeId>;
}

/**
 * SWIM (Das, Gupta, Motivala; DSN 2002) with Lifeguard's refinements, as a sans-I/O state machine
 * in the style of etcd's raft: `step(input)` returns what to send, which timers to set, and which
 * membership changes happened. Time arrives with each input; randomness comes from the injected
 * Rng; nothing here touches a socket, a clock or a disk.
 *
 * - Probing: one member per period, round robin over a shuffled list; no ack within the timeout
 *   → `ping-req` through k relays, which answer `nack` if they hear nothing (Lifeguard).
 * - Suspicion: a member that fails a probe period is suspected; the suspicion is gossiped and
 *   expires after a timeout that shrinks as independent members confirm it; then it is dead.
 * - Incarnations: a member refutes a suspicion about itself with a higher incarnation; stale
 *   incarnations never change anything.
 * - Local health: a node whose own probes fail or who must refute stretches its own timing.
 * - Reachability: each member's row of the live members it cannot reach directly (from its
 *   probes) is piggybacked like membership updates and swapped in push-pull: every member holds
 *   the matrix, so it can name broken paths it is not on (route failures, partial partitions).
 */
export class SwimCore {
  readonly id: NodeId;
  incarnation = 0;
  /** Messages that failed validation (dropped, never acted on). */
  malformed = 0;
  private readonly cfg: SwimConfig;
  private readonly members = new Map<NodeId, Member>();
  private readonly gossip = new GossipQueue();
  /** The reachability matrix as this member holds it (its own row kept from its probes). */
  readonly reach: Reachability;
  private readonly rowGossip = new GossipQueue<ReachRow>((r) => r.o);
  private readonly health: LocalHealth;
  private readonly relays = new Map<number, Relay>();
  private readonly suspicions = new Map<NodeId, Suspicion>();
  private order: NodeId[] = [];
  private cursor = 0;
  private seq = 0;
  private probe: Probe | undefined;
  private out: SwimOutput[] = [];
  private leaving = false;
  /** A member whose last probe was answered only through a relay: probed again next period. */
  private recheck: NodeId | undefined;
  private rechecks = 0;
  /** Pings sent by `ask`, awaiting their ack: seq → target and when sent (at most MAX_ASKS). */
  private readonly asks = new Map<number, { target: NodeId; sentAt: number }>();
  /** Members alive or suspect, this node included (kept up to date: asked for on every message). */
  private live = 1;
  private started = false;

  private readonly rng: Rng;
  private readonly seeds: readonly NodeId[];
  private readonly addr: Address | undefined;
  private readonly host: string | undefined;
  private readonly boot: string | undefined;
  private readonly extension: ((peer: NodeId) => string | undefined) | undefined;

  constructor(o: SwimCoreOptions) {
    this.id = o.id;
    this.rng = o.rng;
    this.seeds = o.seeds ?? [];
    this.addr = o.address;
    this.host = o.host;
    this.boot = o.boot;
    this.extension = o.extension;
    this.cfg = { ...SWIM_DEFAULTS, ...o.config };
    this.health = new LocalHealth(this.cfg.awarenessMax);
    this.reach = new Reachability(o.id, o.boot, 3 * this.cfg.pushPullIntervalMs);
    // A random first sequence number: acks addressed to an earlier life of this node do not match.
    this.seq = o.rng.u32() * 1024;
    for (const id of o.members ?? []) {
      if (id === o.id || this.members.has(id)) continue;
      this.members.set(id, { id, incarnation: 0, status: "alive", since: 0 });
      this.live++;
    }
    // Every node walks its own random order: if all walked the same one, a crashed member could
    // wait a whole round before anyone probed it.
    this.order = this.rng.shuffle([...this.members.keys()]);
  }

  // ---- inspection --------------------------------------------------------------------------

  member(id: NodeId): Member | undefined {
    return this.members.get(id);
  }

  /** Every member this node knows, itself excluded. */
  memberList(): Member[] {
    return [...this.members.values()];
  }

  /** Members believed alive (suspects included: they are not declared failed yet). */
  liveCount(): number {
    return this.live;
  }

  get localHealth(): number {
    return this.health.value;
  }

  // ---- the state machine -------------------------------------------------------------------

  step(input: SwimInput): SwimOutput[] {
    this.out = [];
    switch (input.type) {
      case "start":
        this.onStart();
        break;
      case "message":
        this.onMessage(input.now, input.from, input.msg);
        break;
      case "timer":
        this.onTimer(input.now, input.timer);
        break;
      case "leave":
        this.onLeave();
        break;
      case "ask":
        this.onAsk(input.now, input.target);
        break;
    }
    return this.out;
  }

  private onAsk(now: number, target: NodeId): void {
    if (!this.members.has(target) || target === this.id) return;
    const seq = this.seq++;
    this.asks.set(seq, { target, sentAt: now });
    // Unanswered asks are forgotten oldest first: the map stays small whatever happens.
    if (this.asks.size > MAX_ASKS) this.asks.delete(this.asks.keys().next().value!);
    this.send(target, { p: "swim", t: "ping", seq, g: this.piggyback() });
  }

  private onStart(): void {
    if (this.started) return;
    this.started = true;
    this.enqueue(this.selfUpdate());
    this.joinSeeds();
    this.setTimer("probe", this.cfg.probeIntervalMs * this.rng.range(0.5, 1.5));
    this.setTimer("push-pull", this.cfg.pushPullIntervalMs * this.rng.range(0.5, 1.5));
  }

  /**
   * Anti-entropy: swap full state with one random live member. Gossip is sent a bounded number of
   * times; this catches what it missed — e.g. a member wrongly declared dead during a partition
   * learns it and refutes, and the two sides of a healed partition merge.
   */
  private onPushPull(): void {
    // A full state is O(n): like memberlist, exchange it less often in larger clusters.
    const n = this.live;
    const scale = n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1;
    this.setTimer("push-pull", this.cfg.pushPullIntervalMs * scale * this.rng.range(0.8, 1.2));
    if (this.leaving) return;
    const live = this.liveIds();
    const candidates = live.length > 0 ? live : [...this.members.keys()];
    if (candidates.length === 0) return;
    this.send(this.rng.pick(candidates), { p: "swim", t: "join", g: this.fullState() });
    // Reconnect (as Serf does): also try one member we hold dead. If a partition has healed, it
    // answers with its state, learns it was declared dead and refutes: the two sides merge.
    const dead: NodeId[] = [];
    for (const m of this.members.values()) if (m.status === "dead") dead.push(m.id);
    if (dead.length > 0) this.send(this.rng.pick(dead), { p: "swim", t: "join", g: this.fullState() });
    // And one configured seed this node does not know at all: after many members restarted at
    // once, two groups can each know only themselves; a seed bridges them (Serf's retry-join).
    const unknown = this.seeds.filter((s) => s !== this.id && !this.members.has(s));
    if (unknown.length > 0) this.send(this.rng.pick(unknown), { p: "swim", t: "join", g: this.fullState() });
  }

  private onLeave(): void {
    if (this.leaving) return;
    this.leaving = true;
    this.incarnation++;
    const u: Update = { id: this.id, inc: this.incarnation, s: "left" };
    this.enqueue(u);
    // Tell a few members at once rather than waiting for the next probe to carry it.
    const live = this.liveIds();
    for (const to of this.rng.shuffle(live).slice(0, Math.max(3, this.cfg.indirectChecks))) {
      this.send(to, { p: "swim", t: "ping", seq: this.seq++, g: [u] });
    }
  }

  private onTimer(now: number, timer: string): void {
    if (timer === "probe") this.onProbeTick(now);
    else if (timer === "probe-timeout") this.onProbeTimeout();
    else if (timer === "push-pull") this.onPushPull();
    else if (timer.startsWith("relay:")) this.onRelayTimeout(Number(timer.slice(6)));
    else if (timer.startsWith("suspect:")) this.onSuspicionExpired(now, timer.slice(8));
  }

  /** A relay heard nothing from the target in time: it says so (Lifeguard's nack). */
  private onRelayTimeout(rseq: number): void {
    const r = this.relays.get(rseq);
    if (!r) return;
    this.relays.delete(rseq);
    this.send(r.origin, { p: "swim", t: "nack", seq: r.originSeq, g: this.piggyback() });
  }

  private onProbeTick(now: number): void {
    const mult = this.health.multiplier;
    this.setTimer("probe", this.cfg.probeIntervalMs * mult);
    if (this.leaving) return;
    // Once a push-pull interval: stale rows dropped, this member's own renewed if it lists anything.
    const renewed = this.reach.tick(now, this.cfg.pushPullIntervalMs);
    if (renewed) this.sendRow(renewed);
    const p = this.probe;
    if (p && !p.acked) {
      // The whole period passed without an ack, direct or relayed: a suspicion, membership's
      // business (every member would list a dead one: O(n) rows each gossiped O(log n) times).
      this.health.worse(1 + Math.max(0, p.relays - p.nacks));
      const m = this.members.get(p.target);
      if (m?.status === "alive") this.suspect(now, m, m.incarnation, this.id);
      // Our own failed probe of a member already suspected is an independent confirmation.
      else if (m?.status === "suspect") this.confirm(now, m, this.id);
    }
    this.probe = undefined;
    if (this.members.size === 0) {
      this.joinSeeds();
      return;
    }
    const target = this.nextTarget();
    if (!target) return;
    const seq = this.seq++;
    this.probe = { seq, target, sentAt: now, acked: false, relays: 0, nacks: 0 };
    this.send(target, { p: "swim", t: "ping", seq, g: this.piggyback() });
    this.setTimer("probe-timeout", this.cfg.probeTimeoutMs * mult);
  }

  private onProbeTimeout(): void {
    const p = this.probe;
    if (!p || p.acked) return;
    const relays = this.sampleLive(this.cfg.indirectChecks, p.target);
    p.relays = relays.length;
    for (const r of relays)
      this.send(r, { p: "swim", t: "ping-req", seq: p.seq, target: p.target, g: this.piggyback() });
  }

  /** Up to k distinct live members other than `except`, at random, without walking every member. */
  private sampleLive(k: number, except: NodeId): NodeId[] {
    const picked = new Set<NodeId>();
    const ids = this.order.length > 0 ? this.order : [...this.members.keys()];
    for (let tries = 0; picked.size < k && tries < 8 * k + 16 && ids.length > 0; tries++) {
      const id = ids[this.rng.int(ids.length)]!;
      const m = this.members.get(id);
      if (id !== except && m && (m.status === "alive" || m.status === "suspect")) picked.add(id);
    }
    if (picked.size < k && ids.length <= 64) {
      for (const id of this.rng.shuffle(this.liveIds())) if (picked.size < k && id !== except) picked.add(id);
    }
    return [...picked];
  }

  private onSuspicionExpired(now: number, id: NodeId): void {
    const s = this.suspicions.get(id);
    const m = this.members.get(id);
    if (!s || !m || m.status !== "suspect" || m.incarnation !== s.inc) return;
    this.suspicions.delete(id);
    this.setStatus(now, m, "dead", m.incarnation);
    this.enqueue({ id, inc: m.incarnation, s: "dead" });
  }

  private onMessage(now: number, from: NodeId, raw: unknown): void {
    const msg = parseSwim(raw);
    if (!msg) {
      this.malformed++;
      return;
    }
    if (from === this.id) {
      this.malformed++;
      return;
    }
    for (const u of msg.g) this.apply(now, u);
    for (const row of msg.r ?? []) this.mergeRow(now, row);
    if ((msg.t === "ping" || msg.t === "ack") && msg.x !== undefined)
      this.out.push({ type: "extension", peer: from, x: msg.x });
    if (this.leaving && msg.t !== "join") return;
    switch (msg.t) {
      case "ping":
        this.send(from, { p: "swim", t: "ack", seq: msg.seq, g: this.piggyback() });
        break;
      case "ack": {
        const relay = this.relays.get(msg.seq);
        if (relay && relay.target === from) {
          this.ownRow(from, true);
          this.relays.delete(msg.seq);
          this.cancelTimer(`relay:${msg.seq}`);
          this.send(relay.origin, { p: "swim", t: "ack", seq: relay.originSeq, g: this.piggyback() });
          break;
        }
        const ask = this.asks.get(msg.seq);
        if (ask && ask.target === from) {
          this.asks.delete(msg.seq);
          this.ownRow(from, true);
          this.out.push({ type: "path", peer: from, direct: true, rttMs: now - ask.sentAt });
          break;
        }
        const p = this.probe;
        if (p && p.seq === msg.seq && !p.acked) {
          p.acked = true;
          this.health.better();
          this.cancelTimer("probe-timeout");
          this.ownRow(p.target, from === p.target);
          if (from === p.target)
            this.out.push({ type: "path", peer: p.target, direct: true, rttMs: now - p.sentAt });
          else {
            this.out.push({ type: "path", peer: p.target, direct: false });
            // Look at that path again next period rather than a whole round later.
            if (this.rechecks < MAX_RECHECKS) {
              this.recheck = p.target;
              this.rechecks++;
            }
          }
        }
        break;
      }
      case "ping-req": {
        if (msg.target === this.id) break;
        const rseq = this.seq++;
        this.relays.set(rseq, { origin: from, originSeq: msg.seq, target: msg.target });
        this.send(msg.target, { p: "swim", t: "ping", seq: rseq, g: this.piggyback() });
        this.setTimer(`relay:${rseq}`, this.cfg.probeTimeoutMs * 0.8);
        break;
      }
      case "nack":
        if (this.probe && this.probe.seq === msg.seq) this.probe.nacks++;
        break;
      case "join":
        this.send(from, { p: "swim", t: "state", g: this.fullState() });
        break;
      case "state":
        break;
    }
  }

  // ---- membership rules --------------------------------------------------------------------

  /** Merge one gossiped fact. Stale incarnations never change anything. */
  private apply(now: number, u: Update): void {
    if (u.id === this.id) {
      this.applyAboutSelf(u);
      return;
    }
    const m = this.members.get(u.id);
    switch (u.s) {
      case "alive": {
        if (!m) {
          const fresh: Member = { id: u.id, incarnation: u.inc, status: "alive", since: now };
          copyMeta(fresh, u);
          this.members.set(u.id, fresh);
          this.live++;
          // A new member goes to a random place among those not yet probed this round (memberlist).
          this.order.splice(this.cursor + this.rng.int(this.order.length - this.cursor + 1), 0, u.id);
          this.out.push({ type: "member", member: { ...fresh }, prev: undefined });
          this.enqueue(u);
          return;
        }
        if (u.inc <= m.incarnation) return;
        const moved = u.addr !== undefined && !sameAddress(m.addr, u.addr);
        copyMeta(m, u);
        this.clearSuspicion(u.id);
        const wasAlive = m.status === "alive";
        this.setStatus(now, m, "alive", u.inc);
        // A member that restarted elsewhere (a new port) and refuted before it was declared
        // dead: its new address must still reach the host, which dials it.
        if (moved && wasAlive) this.out.push({ type: "member", member: { ...m }, prev: "alive" });
        this.enqueue(u);
        return;
      }
      case "suspect": {
        if (!m || m.status === "dead" || m.status === "left" || u.inc < m.incarnation) return;
        if (m.status === "suspect" && u.inc === m.incarnation) {
          this.confirm(now, m, u.by ?? "?");
          return;
        }
        this.suspect(now, m, u.inc, u.by ?? "?");
        return;
      }
      case "dead":
      case "left": {
        if (!m || u.inc < m.incarnation || m.status === "dead" || m.status === "left") return;
        this.clearSuspicion(u.id);
        this.setStatus(now, m, u.s, u.inc);
        this.enqueue(u);
        return;
      }
    }
  }

  private applyAboutSelf(u: Update): void {
    if (this.leaving) return;
    if (u.s === "alive" && u.inc <= this.incarnation) return;
    if (u.s !== "alive" && u.inc < this.incarnation) return;
    // Someone believes we are suspect, dead, or alive at a newer incarnation: refute.
    this.incarnation = u.inc + 1;
    if (u.s !== "alive") this.health.worse();
    this.enqueue(this.selfUpdate());
  }

  private suspect(now: number, m: Member, inc: number, by: NodeId): void {
    this.setStatus(now, m, "suspect", inc);
    this.suspicions.set(m.id, { inc, start: now, by: new Set([by]) });
    this.enqueue({ id: m.id, inc, s: "suspect", by });
    this.armSuspicion(now, m.id);
  }

  private confirm(now: number, m: Member, by: NodeId): void {
    const s = this.suspicions.get(m.id);
    if (!s || s.by.has(by)) return;
    s.by.add(by);
    this.enqueue({ id: m.id, inc: m.incarnation, s: "suspect", by });
    this.armSuspicion(now, m.id);
  }

  private armSuspicion(now: number, id: NodeId): void {
    const s = this.suspicions.get(id)!;
    const n = Math.max(1, this.liveCount());
    const min = this.cfg.suspicionMult * Math.max(1, Math.log10(n)) * this.cfg.probeIntervalMs;
    const max = this.cfg.suspicionMaxTimeoutMult * min;
    const k = this.cfg.suspicionMult - 2;
    const timeout = suspicionTimeout(min, max, k, s.by.size - 1);
    this.setTimer(`suspect:${id}`, Math.max(0, s.start + timeout - now));
  }

  private clearSuspicion(id: NodeId): void {
    if (this.suspicions.delete(id)) this.cancelTimer(`suspect:${id}`);
  }

  private setStatus(now: number, m: Member, status: MemberStatus, inc: number): void {
    const prev = m.status;
    m.incarnation = inc;
    if (prev === status) return;
    const isLive = (s: MemberStatus) => s === "alive" || s === "suspect";
    this.live += Number(isLive(status)) - Number(isLive(prev));
    m.status = status;
    m.since = now;
    this.out.push({ type: "member", member: { ...m }, prev });
    // The matrix is about paths between live members: a member declared dead or gone leaves it.
    if ((status === "left" || status === "dead") && this.reach.forget(m.id))
      this.sendRow(this.reach.ownRow());
  }

  /** How this member's own probe of `id` went (answered directly or only through a relay). */
  private ownRow(id: NodeId, direct: boolean): void {
    if (this.reach.answered(id, direct)) this.sendRow(this.reach.ownRow());
  }

  /** Gossip a row (this member's own, changed or renewed, or a newer one heard) and say so. */
  private sendRow(row: ReachRow): void {
    this.rowGossip.push(row);
    this.out.push({ type: "reach", row });
  }

  /** A row heard from the network: taken and passed on when newer; rows of strangers are not. */
  private mergeRow(now: number, row: ReachRow): void {
    const owner = this.members.get(row.o);
    // Rows of members declared dead or gone are not taken: they would come back after `forget`.
    if (!owner || owner.status === "left" || owner.status === "dead") return;
    if (this.reach.merge(row, owner.boot, now)) this.sendRow(row);
  }

  // ---- helpers -----------------------------------------------------------------------------

  private selfUpdate(): Update {
    const u: Update = { id: this.id, inc: this.incarnation, s: "alive" };
    if (this.addr) u.addr = this.addr;
    if (this.host) u.host = this.host;
    if (this.boot) u.boot = this.boot;
    return u;
  }

  private fullState(): Update[] {
    const all: Update[] = [this.selfUpdate()];
    for (const m of this.members.values()) {
      const u: Update = { id: m.id, inc: m.incarnation, s: m.status };
      copyMeta(u, m);
      all.push(u);
    }
    return all;
  }

  private joinSeeds(): void {
    for (const s of this.seeds)
      if (s !== this.id) this.send(s, { p: "swim", t: "join", g: [this.selfUpdate()] });
  }

  private liveIds(): NodeId[] {
    const ids: NodeId[] = [];
    for (const m of this.members.values()) if (m.status === "alive" || m.status === "suspect") ids.push(m.id);
    return ids;
  }

  private nextTarget(): NodeId | undefined {
    const again = this.recheck;
    this.recheck = undefined;
    if (again !== undefined) {
      const m = this.members.get(again);
      if (m && (m.status === "alive" || m.status === "suspect")) return again;
    }
    this.rechecks = 0;
    for (let tries = 0; tries <= this.order.length; tries++) {
      if (this.cursor >= this.order.length) {
        this.order = this.rng.shuffle([...this.members.keys()]);
        this.cursor = 0;
      }
      const id = this.order[this.cursor++];
      const m = id === undefined ? undefined : this.members.get(id);
      if (m && (m.status === "alive" || m.status === "suspect")) return m.id;
    }
    return undefined;
  }

  private enqueue(u: Update): void {
    this.gossip.push(u);
  }

  private piggyback(): Update[] {
    return this.gossip.take(this.cfg.maxPiggyback, this.retransmitLimit());
  }

  /** How many times a gossiped fact is sent: λ·log(n), as in memberlist. */
  private retransmitLimit(): number {
    return Math.max(1, this.cfg.retransmitMult * Math.ceil(Math.log10(this.liveCount() + 1)));
  }

  private send(to: NodeId, msg: SwimMessage): void {
    if (this.extension && (msg.t === "ping" || msg.t === "ack")) {
      const x = this.extension(to);
      if (x !== undefined) msg.x = x;
    }
    // Reachability rows ride along: changed ones on every message, all of them in a full state.
    const rows =
      msg.t === "join" || msg.t === "state"
        ? this.reach.fullState()
        : this.rowGossip.take(ROWS_PER_MESSAGE, this.retransmitLimit());
    if (rows.length > 0) msg.r = rows;
    this.out.push({ type: "send", to, msg });
  }

  private setTimer(timer: string, afterMs: number): void {
    this.out.push({ type: "set-timer", timer, afterMs });
  }

  private cancelTimer(timer: string): void {
    this.out.push({ type: "cancel-timer", timer });
  }
}

/** Where a member listens, its host and its boot travel with its alive updates. */
function copyMeta(to: { addr?: Address; host?: string; boot?: string }, from: Update | Member): void {
  if (from.addr) to.addr = from.addr;
  if (from.host) to.host = from.host;
  if (from.boot) to.boot = from.boot;
}
