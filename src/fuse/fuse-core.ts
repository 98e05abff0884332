import type { NodeId } from "../net/transport.ts";
import type { FuseMessage, FuseReason, GroupId } from "./messages.ts";

/**
 * FUSE (Dunagan et al., OSDI 2004) as a sans-I/O state machine: groups of nodes that share one
 * fate. When a group fails — a member crashes, exits or is cut off, a member restarts without
 * it, or someone signals — every live member is told, once, within a bound (docs/ARCHITECTURE.md).
 *
 *  - **Creation**: the root (the creator) asks every member; once all have answered it commits the
 *    group, with each member's life (boot) at that moment. If any member does not answer in time,
 *    creation fails and every member already contacted is told.
 *  - **Failure** is one-shot: the first member to learn of it floods `fail` to every other member,
 *    retrying until each acknowledges or is known gone; each member that learns of it does the
 *    same, so one notifier's crash cannot stop it. The host feeds in the detector's verdicts about
 *    members (`memberFailed`) and members' new lives (`memberBoot`).
 *  - **Liveness rides on membership's probes**: every SWIM ping and ack to a peer carries a digest
 *    of the groups the two share (an XOR of 64-bit hashes: O(1) to keep up to date, a few bytes on
 *    the wire whatever the number of groups). Only when digests differ do the two exchange their
 *    lists; a group one of them lacks is first **repaired** through its root (the root resends
 *    the commit, the application is not bothered — a soft notification), and fails only if the
 *    root no longer vouches for it (a hard notification).
 */

export interface FuseOptions {
  /** How long creation waits for every member (ms). */
  createTimeoutMs: number;
  /** Resend unanswered create, commit and fail messages this often (ms). */
  retryMs: number;
  /** Failed groups are remembered this long, so late messages about them are answered (ms). */
  tombstoneMs: number;
  /** At most one list exchange per peer this often (ms). */
  reconcileEveryMs: number;
}

export const FUSE_DEFAULTS: FuseOptions = {
  createTimeoutMs: 3000,
  retryMs: 250,
  tombstoneMs: 600_000,
  reconcileEveryMs: 1000,
};

export type FuseOutput =
  | { type: "send"; to: NodeId; msg: FuseMessage }
  /** Tell the application: `group` failed, because `reason`. Once per group. */
  | { type: "notify"; group: GroupId; reason: FuseReason; members: NodeId[] }
  | { type: "created"; req: number; group: GroupId }
  | { type: "create-failed"; req: number; group: GroupId; reason: FuseReason };

type State = "creating" | "pending" | "live" | "failed";

interface Group {
  id: GroupId;
  root: NodeId;
  members: NodeId[];
  state: State;
  /** Each member's life when the group was committed. */
  boots?: Record<NodeId, string>;
  /** Root, creating: the members' answers (their boots). */
  acks?: Map<NodeId, string>;
  /** Root, live: members that have not acknowledged the commit yet. */
  uncommitted?: Set<NodeId>;
  /** Creating (root) or pending (member): give up on creation at this time. */
  deadline?: number;
  req?: number;
  reason?: FuseReason;
  failedAt?: number;
  /** Members that have not acknowledged our `fail` yet. */
  unacked?: Set<NodeId>;
}

/** Two 32-bit FNV-1a hashes of a group id: its share of a digest. */
function hash64(id: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193) ^ (b >>> 13);
  }
  return [a >>> 0, b >>> 0];
}

export class FuseCore {
  private readonly groups = new Map<GroupId, Group>();
  /** Groups not yet failed, by member. */
  private readonly byMember = new Map<NodeId, Set<GroupId>>();
  /** XOR of the hashes of the live groups shared with each peer. */
  private readonly digests = new Map<NodeId, [number, number]>();
  private readonly lastReconcile = new Map<NodeId, number>();
  /** Members known gone (no use waiting for their acknowledgements). */
  private readonly gone = new Set<NodeId>();
  /** The life (boot id) each member was last seen alive as. */
  private readonly lives = new Map<NodeId, string>();
  /** Lives known dead (reported, or replaced by a newer one), the last few per member. */
  private readonly dead = new Map<NodeId, string[]>();
  private readonly tombstones: Array<{ at: number; g: GroupId }> = [];
  private counter = 0;
  private out: FuseOutput[] = [];
  private readonly o: FuseOptions;

  constructor(
    readonly self: NodeId,
    /** This node's life: groups it joined die with it. */
    readonly boot: string,
    options: Partial<FuseOptions> = {},
  ) {
    this.o = { ...FUSE_DEFAULTS, ...options };
  }

  // ---- inspection --------------------------------------------------------------------------

  state(g: GroupId): State | undefined {
    return this.groups.get(g)?.state;
  }

  reason(g: GroupId): FuseReason | undefined {
    return this.groups.get(g)?.reason;
  }

  members(g: GroupId): NodeId[] | undefined {
    return this.groups.get(g)?.members;
  }

  /** Each member's life when the group was committed. */
  boots(g: GroupId): Record<NodeId, string> | undefined {
    return this.groups.get(g)?.boots;
  }

  /** Groups not failed (live, or being created). */
  activeGroups(): GroupId[] {
    return [...this.groups.values()].filter((g) => g.state !== "failed").map((g) => g.id);
  }

  /**
   * The digest of the live groups shared with `peer`, as it rides on the probes: 64 bits in 11
   * characters, the same size whether the two share no group or thousands — steady-state traffic
   * does not depend on the number of groups.
   */
  digest(peer: NodeId): string {
    const d = this.digests.get(peer) ?? [0, 0];
    const b = Buffer.allocUnsafe(8);
    b.writeUInt32LE(d[0], 0);
    b.writeUInt32LE(d[1], 4);
    return b.toString("base64url");
  }

  // ---- local requests ----------------------------------------------------------------------

  /** Create a group of `members` (this node included) for request `req`. */
  create(now: number, members: readonly NodeId[], req: number): FuseOutput[] {
    this.out = [];
    const all = [...new Set([...members, this.self])].sort();
    const id = `${this.self}/${this.boot}/${++this.counter}`;
    const g: Group = { id, root: this.self, members: all, state: "creating", acks: new Map(), req };
    g.deadline = now + this.o.createTimeoutMs;
    g.acks!.set(this.self, this.boot);
    this.add(g);
    for (const m of all) if (m !== this.self) this.send(m, { p: "fuse", t: "create", g: id, members: all });
    this.maybeCommit(g);
    return this.out;
  }

  /** The application declares group `g` failed. Returns false when there is no such live group. */
  signal(now: number, g: GroupId, payload?: unknown): { ok: boolean; out: FuseOutput[] } {
    this.out = [];
    const group = this.groups.get(g);
    if (!group || group.state === "failed") return { ok: false, out: [] };
    this.fail(now, group, { type: "signal", by: this.self, ...(payload === undefined ? {} : { payload }) });
    return { ok: true, out: this.out };
  }

  // ---- inputs from the detector ------------------------------------------------------------

  /**
   * The detector says `member` failed (life `boot`, when the report names one): every group with
   * it fails — except groups made with another life of it (a late report about an old life).
   */
  memberFailed(now: number, member: NodeId, reason: FuseReason, boot?: string): FuseOutput[] {
    this.out = [];
    // A late report about an earlier life says nothing about the life running now: that one
    // still needs to hear of failures (its acknowledgements are still awaited).
    const current = this.lives.get(member);
    const stale = boot !== undefined && current !== undefined && current !== boot;
    if (!stale) {
      this.gone.add(member);
      // The life reported dead (or, unnamed, the one known): a late answer from it does not
      // bring it back (answered).
      const life = boot ?? current;
      if (life !== undefined) this.markDead(member, life);
      for (const g of this.groups.values()) g.unacked?.delete(member);
    }
    for (const id of [...(this.byMember.get(member) ?? [])]) {
      const g = this.groups.get(id);
      const was = g?.boots?.[member] ?? g?.acks?.get(member);
      if (g && (boot === undefined || was === undefined || was === boot)) this.fail(now, g, reason);
    }
    return this.out;
  }

  /** `member` is alive as life `boot`: groups it joined in an earlier life fail. */
  memberBoot(now: number, member: NodeId, boot: string): FuseOutput[] {
    this.out = [];
    this.gone.delete(member);
    const was = this.lives.get(member);
    if (was !== undefined && was !== boot) this.markDead(member, was); // replaced by this one
    this.lives.set(member, boot);
    for (const id of [...(this.byMember.get(member) ?? [])]) {
      const g = this.groups.get(id);
      const was = g?.boots?.[member] ?? g?.acks?.get(member);
      if (g && was !== undefined && was !== boot) this.fail(now, g, { type: "member-restarted", member });
    }
    return this.out;
  }

  /** A peer's digest arrived on a probe: compare, and exchange lists if they differ. */
  onDigest(now: number, peer: NodeId, x: string | undefined): FuseOutput[] {
    this.out = [];
    if (this.digest(peer) === x) return this.out;
    if (now - (this.lastReconcile.get(peer) ?? Number.NEGATIVE_INFINITY) < this.o.reconcileEveryMs)
      return this.out;
    this.lastReconcile.set(peer, now);
    this.sendList(peer, true);
    return this.out;
  }

  // ---- messages ----------------------------------------------------------------------------

  receive(now: number, from: NodeId, m: FuseMessage): FuseOutput[] {
    this.out = [];
    const g = m.t === "list" ? undefined : this.groups.get(m.g);
    switch (m.t) {
      case "create":
        if (g?.state === "failed") this.send(from, { p: "fuse", t: "fail", g: m.g, reason: g.reason! });
        else if (!m.members.includes(this.self) || !m.members.includes(from)) break;
        else {
          if (!g) {
            const group: Group = { id: m.g, root: from, members: [...m.members].sort(), state: "pending" };
            group.deadline = now + 3 * this.o.createTimeoutMs;
            this.add(group);
          }
          this.send(from, { p: "fuse", t: "create-ack", g: m.g, boot: this.boot });
        }
        break;
      case "create-ack":
        if (g?.state === "creating" && g.members.includes(from)) {
          g.acks!.set(from, m.boot);
          this.answered(from, m.boot);
          this.maybeCommit(g);
        } else if (g?.state === "failed")
          this.send(from, { p: "fuse", t: "fail", g: m.g, reason: g.reason! });
        break;
      case "commit":
        if (g?.state === "failed") {
          this.send(from, { p: "fuse", t: "fail", g: m.g, reason: g.reason! });
          break;
        }
        if (m.boots[this.self] !== this.boot) {
          // The group was made with an earlier life of this node: it is gone for us, so it fails.
          this.send(from, {
            p: "fuse",
            t: "fail",
            g: m.g,
            reason: { type: "member-restarted", member: this.self },
          });
          break;
        }
        if (!g) {
          // This life acked the creation (its boot is in the commit), so it knew the group; not
          // knowing it now means it failed here and its tombstone is gone. Adopting it would bring
          // a failed group back to life: answer that it failed.
          this.send(from, {
            p: "fuse",
            t: "fail",
            g: m.g,
            reason: { type: "lost", member: this.self, detail: "the group had already failed here" },
          });
          break;
        }
        this.goLive(g, m.boots);
        this.send(from, { p: "fuse", t: "commit-ack", g: m.g });
        break;
      case "commit-ack":
        g?.uncommitted?.delete(from);
        break;
      case "fail":
        this.send(from, { p: "fuse", t: "fail-ack", g: m.g });
        if (g) this.fail(now, g, m.reason);
        else this.tombstone(now, { id: m.g, root: from, members: [], state: "failed", reason: m.reason });
        break;
      case "fail-ack":
        g?.unacked?.delete(from);
        break;
      case "list":
        this.reconcile(now, from, m.groups, m.reply);
        break;
      case "ask": {
        const live = g !== undefined && g.root === this.self && g.state === "live";
        // Failed here: say why first, or the asker fails it as lost on our "no".
        if (g?.state === "failed") this.send(from, { p: "fuse", t: "fail", g: m.g, reason: g.reason! });
        this.send(from, { p: "fuse", t: "answer", g: m.g, live });
        // Repair: the member another one found without the group gets the commit again.
        if (live && g.members.includes(m.for) && m.for !== this.self) {
          this.recommit(g, m.for);
        }
        break;
      }
      case "answer":
        if (g && g.state === "live" && g.root === from && !m.live)
          this.fail(now, g, { type: "lost", member: from, detail: "its root no longer holds it" });
        break;
    }
    return this.out;
  }

  /** Retries, creation deadlines, forgetting old tombstones. */
  tick(now: number): FuseOutput[] {
    this.out = [];
    for (const g of this.groups.values()) {
      if (g.state === "creating") {
        if (now >= g.deadline!) {
          const missing = g.members.find((m) => !g.acks!.has(m)) ?? this.self;
          this.fail(now, g, { type: "create-failed", member: missing, detail: "did not answer in time" });
          continue;
        }
        for (const m of g.members)
          if (!g.acks!.has(m)) this.send(m, { p: "fuse", t: "create", g: g.id, members: g.members });
      } else if (g.state === "pending" && now >= g.deadline!) {
        this.fail(now, g, { type: "create-failed", member: g.root, detail: "creation never completed" });
      } else if (g.state === "live" && g.uncommitted && g.uncommitted.size > 0) {
        for (const m of g.uncommitted)
          this.send(m, { p: "fuse", t: "commit", g: g.id, members: g.members, boots: g.boots! });
      } else if (g.state === "failed" && g.unacked && g.unacked.size > 0) {
        for (const m of g.unacked) {
          if (this.gone.has(m)) g.unacked.delete(m);
          else this.send(m, { p: "fuse", t: "fail", g: g.id, reason: g.reason! });
        }
      }
    }
    while (this.tombstones.length > 0 && now - this.tombstones[0]!.at > this.o.tombstoneMs) {
      const { g } = this.tombstones.shift()!;
      const group = this.groups.get(g);
      if (group?.state !== "failed") continue;
      // Keep the tombstone while members have not acknowledged the failure: forgetting it could
      // let a late message bring the group back.
      if (group.unacked && group.unacked.size > 0) this.tombstones.push({ at: now, g });
      else this.groups.delete(g);
    }
    return this.out;
  }

  // ---- internals ---------------------------------------------------------------------------

  private maybeCommit(g: Group): void {
    if (g.acks!.size < g.members.length) return;
    const boots: Record<NodeId, string> = {};
    for (const [m, b] of g.acks!) boots[m] = b;
    g.uncommitted = new Set(g.members.filter((m) => m !== this.self));
    this.goLive(g, boots);
    for (const m of g.uncommitted)
      this.send(m, { p: "fuse", t: "commit", g: g.id, members: g.members, boots });
    this.out.push({ type: "created", req: g.req!, group: g.id });
  }

  private goLive(g: Group, boots: Record<NodeId, string>): void {
    if (g.state === "live") return;
    g.state = "live";
    g.boots = boots;
    for (const [m, boot] of Object.entries(boots)) this.answered(m, boot);
    delete g.deadline;
    delete g.acks;
    this.toggleDigest(g);
  }

  /**
   * `member` answered as life `boot` (its create-ack, or its boot in a commit): that life is
   * alive, whatever was reported about another one. A member restarted and put in a new group
   * before membership gossiped its new life was still "gone" here, so a failure of the new group
   * was never sent to it: it learned of it only as "lost", from its root's list, not why.
   */
  private answered(member: NodeId, boot: string): void {
    const current = this.lives.get(member);
    if (member === this.self || current === boot || this.isDead(member, boot)) return;
    // Boot ids have no order: while another life is known alive, a late answer from an earlier
    // one must not take its place (its failure report would then be judged stale).
    if (current !== undefined && !this.isDead(member, current)) return;
    this.lives.set(member, boot);
    this.gone.delete(member);
  }

  /** Lives reported dead, or replaced by a newer one, per member (the last few). */
  private markDead(member: NodeId, boot: string): void {
    const lives = this.dead.get(member) ?? [];
    if (lives.includes(boot)) return;
    lives.push(boot);
    if (lives.length > 8) lives.shift();
    this.dead.set(member, lives);
  }

  private isDead(member: NodeId, boot: string): boolean {
    return this.dead.get(member)?.includes(boot) ?? false;
  }

  /** The group fails here: tell the application (once) and every other member (until they ack). */
  private fail(now: number, g: Group, reason: FuseReason): void {
    if (g.state === "failed") return;
    const was = g.state;
    if (was === "live") this.toggleDigest(g);
    for (const m of g.members) this.byMember.get(m)?.delete(g.id);
    g.state = "failed";
    g.reason = reason;
    g.unacked = new Set(g.members.filter((m) => m !== this.self && !this.gone.has(m)));
    for (const m of g.unacked) this.send(m, { p: "fuse", t: "fail", g: g.id, reason });
    this.tombstone(now, g);
    if (was === "creating") this.out.push({ type: "create-failed", req: g.req!, group: g.id, reason });
    else this.out.push({ type: "notify", group: g.id, reason, members: g.members });
  }

  private tombstone(now: number, g: Group): void {
    g.failedAt = now;
    this.groups.set(g.id, g);
    this.tombstones.push({ at: now, g: g.id });
  }

  private add(g: Group): void {
    this.groups.set(g.id, g);
    for (const m of g.members) {
      const set = this.byMember.get(m) ?? new Set<GroupId>();
      set.add(g.id);
      this.byMember.set(m, set);
    }
  }

  /** Repair: send `member` the commit again (until it acknowledges). */
  private recommit(g: Group, member: NodeId): void {
    this.send(member, { p: "fuse", t: "commit", g: g.id, members: g.members, boots: g.boots! });
    g.uncommitted ??= new Set();
    g.uncommitted.add(member);
  }

  private toggleDigest(g: Group): void {
    const [a, b] = hash64(g.id);
    for (const m of g.members) {
      if (m === this.self) continue;
      const d = this.digests.get(m) ?? [0, 0];
      this.digests.set(m, [(d[0] ^ a) >>> 0, (d[1] ^ b) >>> 0]);
    }
  }

  /** The groups (live or being created) this node holds with `peer`. */
  private shared(peer: NodeId): GroupId[] {
    const out: GroupId[] = [];
    for (const id of this.byMember.get(peer) ?? []) {
      const g = this.groups.get(id);
      if (g && g.state !== "failed" && g.members.includes(this.self)) out.push(id);
    }
    return out;
  }

  /**
   * The lists differ. What `peer` holds and we have failed: tell it. What we hold live and it
   * lacks: repair through the root (it resends the commit; the application is not bothered), or,
   * if we are the root, resend the commit ourselves; if the peer is the root, the group is lost.
   */
  private reconcile(now: number, peer: NodeId, theirs: GroupId[], reply: boolean): void {
    const theirSet = new Set(theirs);
    // The failures before our list: the peer, reading the list first, would find a group it holds
    // missing from its root's list and fail it as lost — told, but not why.
    for (const id of theirs) {
      const g = this.groups.get(id);
      if (g?.state === "failed") this.send(peer, { p: "fuse", t: "fail", g: id, reason: g.reason! });
    }
    if (reply) this.sendList(peer, false, theirSet);
    for (const id of this.shared(peer)) {
      if (theirSet.has(id)) continue;
      const g = this.groups.get(id)!;
      if (g.state !== "live") continue; // still being created: the peer will hear of it
      if (g.root === this.self) {
        this.recommit(g, peer);
      } else if (g.root === peer) {
        this.fail(now, g, { type: "lost", member: peer, detail: "its root no longer holds it" });
      } else {
        this.send(g.root, { p: "fuse", t: "ask", g: id, for: peer });
      }
    }
  }

  /**
   * Our list of the groups we share with `peer`, preceded by the failures it has not acknowledged
   * (a lost `fail` would otherwise show up as a group missing from our list: "lost", not the
   * reason). `told`: groups whose failure was just sent.
   */
  private sendList(peer: NodeId, reply: boolean, told?: ReadonlySet<GroupId>): void {
    // (A scan of the groups, as tick's; this runs only when two digests differ, at most once per
    // reconcileEveryMs a peer.)
    for (const g of this.groups.values()) {
      if (g.state === "failed" && g.unacked?.has(peer) && !told?.has(g.id))
        this.send(peer, { p: "fuse", t: "fail", g: g.id, reason: g.reason! });
    }
    this.send(peer, { p: "fuse", t: "list", groups: this.shared(peer), reply });
  }

  private send(to: NodeId, msg: FuseMessage): void {
    this.out.push({ type: "send", to, msg });
  }
}

/**
 * The bound T within which every live member of a failed group is told, from the configuration:
 *
 *   T = (2(N−1) + 1) · P · H  +  S_max  +  2P  +  F
 *
 * N members in the cluster, P the probe interval, H = awarenessMax + 1 Lifeguard's largest
 * stretch of a node's own probing; every node probes every member once per round of N−1 periods
 * in its own random order, so at most 2(N−1) periods pass between two of its probes of the same
 * member, plus one probe timeout. S_max = suspicionMaxTimeoutMult · suspicionMult · max(1, log10 N)
 * · P is the longest suspicion; 2P the detector's correlation hold. Each live member sees a
 * crashed or cut-off member on its own within that, whether or not anyone tells it. F covers the
 * flood that carries a signal (or a failure someone else saw first) to members that can be reached:
 * `floodRetries` rounds of `retryMs`.
 */
export function fuseBound(
  swim: {
    probeIntervalMs: number;
    awarenessMax: number;
    suspicionMult: number;
    suspicionMaxTimeoutMult: number;
  },
  clusterSize: number,
  fuse: Partial<FuseOptions> = {},
  floodRetries = 20,
): number {
  const p = swim.probeIntervalMs;
  const h = swim.awarenessMax + 1;
  const sMax = swim.suspicionMaxTimeoutMult * swim.suspicionMult * Math.max(1, Math.log10(clusterSize)) * p;
  const retry = fuse.retryMs ?? FUSE_DEFAULTS.retryMs;
  return (2 * (clusterSize - 1) + 1) * p * h + sMax + 2 * p + floodRetries * retry;
}
