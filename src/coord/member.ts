import type { Logger } from "pino";
import type { Entry } from "../consensus/messages.ts";
import { RaftNode } from "../consensus/raft-node.ts";
import type { RaftOptions } from "../consensus/raft-types.ts";
import type { Monitor } from "../detect/monitor.ts";
import type { FailureReport } from "../detect/report.ts";
import type { DurableStore } from "../durable/store.ts";
import type { NodeId, Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { ErrorCode, FaultlineError, isFaultlineError } from "../runtime/errors.ts";
import type { Rng } from "../runtime/rng.ts";
import { refusal } from "./limits.ts";
import { type MvccImage, MvccStore } from "./mvcc.ts";
import type { Applied, Bytes, Command, RangeRequest, WatchEvent } from "./types.ts";
import { Errors, Status } from "./types.ts";

export interface CoordMemberOptions {
  id: NodeId;
  voters: readonly NodeId[];
  transport: Transport;
  clock: Clock;
  rng: Rng;
  store: DurableStore;
  raft?: Partial<RaftOptions>;
  /** The detector: reports about the leader drive failover; an owner's exit revokes its leases. */
  monitor?: Monitor;
  /**
   * Snapshot the store after this many writes at the least (default 100,000, etcd 3.4's
   * --snapshot-count). A snapshot here encodes the whole MVCC history, ~2-3 µs a revision (a
   * slice of keys per event-loop turn: MvccStore.snapshotWriter), writes it to disk a chunk per
   * commit and deletes the log it replaces a slice per commit (RaftStorage); taken every 10,000
   * writes it cost the members 15-25 % of their CPU at 64 writers. The log stays bounded in bytes
   * (RaftNode.compactAtBytes).
   */
  compactEvery?: number;
  /** Commit the Raft log off the event loop (RaftNode.commitOffLoop; default false). */
  commitOffLoop?: boolean;
  /**
   * How long a request forwarded to the leader may take; also how long a request that arrives
   * while no leader is known waits for one (default 5000): such a request can take twice this.
   */
  forwardTimeoutMs?: number;
  /** The largest write request, in key and value bytes (etcd's --max-request-bytes: 1.5 MiB). */
  maxRequestBytes?: number;
  logger?: Logger;
}

/** A failed request: a gRPC status code and etcd's message. */
export class CoordFailure extends Error {
  constructor(
    readonly grpc: number,
    message: string,
  ) {
    super(message);
    this.name = "CoordFailure";
  }
}

/** Requests a follower forwards to the leader (and the leader serves itself). */
type LeaderOp =
  | { op: "propose"; cmd: Command }
  | { op: "read"; req: RangeRequest }
  | { op: "keepalive"; id: number }
  | { op: "ttl"; id: number };

type CoordMessage =
  | { p: "coord"; t: "fwd"; id: number; req: LeaderOp }
  | { p: "coord"; t: "fwd-r"; id: number; ok: boolean; value?: unknown; grpc?: number; message?: string };

export interface Watcher {
  key: Bytes;
  end: Bytes | undefined;
  prevKv: boolean;
  /** The next revision this watcher has not seen. */
  next: number;
  send(revision: number, events: WatchEvent[]): void;
  /** The watcher's start revision was compacted away (it is cancelled). */
  compacted(revision: number): void;
}

const TICK_MS = 50;

/**
 * One member of the coordination service: a Raft member whose state machine is the MVCC store,
 * plus what only the leader does — lease expiry (a lessor on the leader's clock, as etcd's) and
 * revoking a session's leases the moment the detector is certain its owner exited — and what
 * every member does: serve watches from its own applied state, serve serializable reads, and
 * forward everything else to the leader.
 */
export class CoordMember {
  readonly mvcc = new MvccStore();
  readonly raft: RaftNode;
  private readonly expiry = new Map<number, number>();
  private readonly revoking = new Set<number>();
  private readonly watchers = new Set<Watcher>();
  private readonly waiting = new Map<
    number,
    { to: NodeId; done: (e: Error | undefined, v?: unknown) => void; timer: Timer }
  >();
  private nextFwd = 1;
  /** Requests that arrived while no leader was known, each woken when one is. */
  private readonly leaderless = new Set<() => void>();
  private stopped = false;
  private ticker: Timer | undefined;
  private offs: Array<() => void> = [];
  private leaseSeq = 0;

  constructor(private readonly o: CoordMemberOptions) {
    this.mvcc.onEvents = (rev, events) => this.fanOut(rev, events);
    this.raft = new RaftNode({
      id: o.id,
      voters: o.voters,
      transport: o.transport,
      clock: o.clock,
      rng: o.rng.fork("raft"),
      store: o.store,
      ...(o.raft ? { raft: o.raft } : {}),
      compactEvery: o.compactEvery ?? 100_000,
      ...(o.commitOffLoop ? { commitOffLoop: true } : {}),
      ...(o.logger ? { logger: o.logger } : {}),
      stateMachine: {
        apply: (e: Entry) => (e.type === "normal" ? this.mvcc.apply(e.data as Command) : null),
        restore: (data) => {
          this.mvcc.restore(data as MvccImage | undefined);
          this.catchUpWatchers();
        },
        snapshot: () => this.mvcc.image(),
        snapshotWriter: () => this.mvcc.snapshotWriter(),
      },
      onLeader: (leader) => {
        // Requests forwarded to a leader that is no longer one will not be answered: fail them
        // now (the client retries) rather than at their timeout.
        this.failForwards((to) => to !== leader);
        if (leader !== undefined) this.wakeLeaderless();
        o.logger?.info({ leader, term: this.raft.core.term }, "raft leader");
        if (leader === o.id) {
          // A new leader gives every lease a full TTL (etcd's promotion): nobody loses a lease
          // for the time it took to elect a leader.
          const now = o.clock.now();
          this.expiry.clear();
          for (const l of this.mvcc.leases.values()) this.expiry.set(l.id, now + l.ttl * 1000);
        }
      },
    });
  }

  get id(): NodeId {
    return this.o.id;
  }

  get leader(): NodeId | undefined {
    return this.raft.core.leader;
  }

  start(): void {
    this.raft.start();
    this.offs.push(
      this.o.transport.on("message", (from, m) => {
        if (typeof m === "object" && m !== null && (m as { p?: unknown }).p === "coord")
          this.onMessage(from, m as CoordMessage);
      }),
    );
    if (this.o.monitor) {
      this.offs.push(
        this.o.monitor.subscribe({ recovered: false }, (r) => {
          const f = r as FailureReport;
          if (f.type !== "failure") return;
          this.o.logger?.debug({ subject: f.subject, kind: f.kind, certainty: f.certainty }, "report");
          if (f.subject === this.raft.core.leader && f.subject !== this.o.id) {
            const certain =
              f.certainty === "certain" && (f.kind === "process-exit" || f.kind === "host-crash");
            if (certain || f.kind === "host-crash" || f.kind === "partition")
              this.raft.leaderDown(f.subject, certain);
            if (certain) this.failForwards((to) => to === f.subject);
            this.o.logger?.info(
              { leader: f.subject, kind: f.kind, certainty: f.certainty, detector: f.detector },
              "leader reported down",
            );
          }
          if (f.certainty === "certain" && (f.kind === "process-exit" || f.kind === "host-crash"))
            this.ownerGone(f.subject);
        }),
      );
    }
    const tick = () => {
      this.expireLeases();
      this.wakeLeaderless();
      this.ticker = this.o.clock.setTimer(TICK_MS, tick);
    };
    this.ticker = this.o.clock.setTimer(TICK_MS, tick);
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.offs.splice(0)) off();
    this.ticker?.cancel();
    const e = new CoordFailure(Status.Unavailable, "etcdserver: server stopped");
    for (const w of this.waiting.values()) {
      w.timer.cancel();
      w.done(e);
    }
    this.waiting.clear();
    this.wakeLeaderless();
    this.watchers.clear();
    this.raft.stop();
  }

  // ---- the API the gRPC layer serves ---------------------------------------------------------

  /** Apply a write through the log (on the leader, forwarded if need be). */
  async write(cmd: Command): Promise<{ revision: number; value: unknown }> {
    const refused = refusal(cmd, this.o.maxRequestBytes);
    if (refused) throw new CoordFailure(refused.grpc, refused.message);
    const r = (await this.leaderOp({ op: "propose", cmd })) as Applied<unknown>;
    if (!r.ok) throw new CoordFailure(r.error.grpc, r.error.message);
    return { revision: r.revision, value: r.value };
  }

  /** A range: linearizable through the leader's ReadIndex, or `serializable` from this member. */
  async range(req: RangeRequest): Promise<{ revision: number; value: unknown }> {
    if (req.serializable) return unwrap(this.mvcc.range(req));
    return (await this.leaderOp({ op: "read", req })) as { revision: number; value: unknown };
  }

  /** Grant a lease: `id` 0 lets the leader pick one. `owner`: the process whose exit ends it. */
  async leaseGrant(
    id: number,
    ttl: number,
    owner?: string,
  ): Promise<{ id: number; ttl: number; revision: number }> {
    if (ttl > 9_000_000_000) throw new CoordFailure(Errors.badTTL.grpc, Errors.badTTL.message);
    const chosen = id || this.newLeaseId();
    const r = await this.write({
      c: "lease-grant",
      id: chosen,
      ttl: Math.max(1, Math.ceil(ttl)),
      ...(owner ? { owner } : {}),
    });
    const v = r.value as { id: number; ttl: number };
    return { id: v.id, ttl: v.ttl, revision: r.revision };
  }

  async leaseRevoke(id: number): Promise<{ revision: number }> {
    return this.write({ c: "lease-revoke", id });
  }

  /** Renew a lease (on the leader's clock); resolves with its TTL. */
  async leaseKeepAlive(id: number): Promise<number> {
    return (await this.leaderOp({ op: "keepalive", id })) as number;
  }

  /** A lease's granted TTL, remaining seconds (-1 when it does not exist) and keys. */
  async leaseTimeToLive(id: number): Promise<{ ttl: number; granted: number; keys: Bytes[] }> {
    return (await this.leaderOp({ op: "ttl", id })) as { ttl: number; granted: number; keys: Bytes[] };
  }

  leaseIds(): number[] {
    return [...this.mvcc.leases.keys()];
  }

  /**
   * Watch keys from revision `from` (0: from now on). Events come from this member's applied
   * state, in revision order, each revision once: what a client saw before a failover, it does
   * not see again after it, and it misses nothing in between.
   */
  watch(w: Watcher, from: number): () => void {
    if (from <= 0 || from > this.mvcc.revision) w.next = from > 0 ? from : this.mvcc.revision + 1;
    else {
      w.next = from;
      if (!this.replay(w)) return () => {};
    }
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  // ---- leader-side work ------------------------------------------------------------------------

  private async leaderOp(req: LeaderOp): Promise<unknown> {
    const leader = this.raft.core.liveLeader ?? (await this.someLeader());
    if (leader === this.o.id) return this.serve(req);
    return new Promise((resolve, reject) => {
      const id = this.nextFwd++;
      const timer = this.o.clock.setTimer(this.o.forwardTimeoutMs ?? 5000, () => {
        this.waiting.delete(id);
        reject(new CoordFailure(Status.Unavailable, "etcdserver: request timed out"));
      });
      this.waiting.set(id, { to: leader, done: (e, v) => (e ? reject(e) : resolve(v)), timer });
      this.o.transport.send(leader, { p: "coord", t: "fwd", id, req } satisfies CoordMessage);
    });
  }

  /**
   * While no leader is known, or the one known is certainly down (its successor's election is on
   * its way): wait for a leader (up to forwardTimeoutMs) instead of failing at once or forwarding
   * to a dead process, as etcd holds a proposal. Nothing has been sent, so the request then goes
   * to the new leader; a client that gave up meanwhile is not answered. Woken when the leader
   * changes, and on every tick (the same leader can be heard from again).
   */
  private someLeader(): Promise<NodeId> {
    return new Promise((resolve, reject) => {
      const wake = () => {
        const leader = this.raft.core.liveLeader;
        if (this.stopped) {
          done();
          reject(new CoordFailure(Status.Unavailable, "etcdserver: server stopped"));
        } else if (leader !== undefined) {
          done();
          resolve(leader);
        }
      };
      const timer = this.o.clock.setTimer(this.o.forwardTimeoutMs ?? 5000, () => {
        done();
        reject(new CoordFailure(Status.Unavailable, "etcdserver: no leader"));
      });
      const done = () => {
        timer.cancel();
        this.leaderless.delete(wake);
      };
      this.leaderless.add(wake);
      wake(); // stopped already
    });
  }

  private wakeLeaderless(): void {
    for (const wake of [...this.leaderless]) wake();
  }

  private serve(req: LeaderOp): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const fail = (e: Error) =>
        reject(
          isFaultlineError(e, ErrorCode.NotLeader)
            ? new CoordFailure(Status.Unavailable, "etcdserver: leader changed")
            : isFaultlineError(e, ErrorCode.BadArgument)
              ? new CoordFailure(Errors.tooLarge.grpc, Errors.tooLarge.message)
              : e instanceof CoordFailure
                ? e
                : new CoordFailure(Status.Unavailable, e.message),
        );
      switch (req.op) {
        case "propose":
          this.raft.submit(req.cmd, (e, r) => {
            if (e) return fail(e);
            const applied = r as Applied<unknown>;
            if (applied.ok && req.cmd.c === "lease-grant")
              this.expiry.set(req.cmd.id, this.o.clock.now() + req.cmd.ttl * 1000);
            resolve(applied);
          });
          return;
        case "read":
          this.raft.readThen((e) => {
            if (e) return fail(e);
            const r = this.mvcc.range(req.req);
            if (!r.ok) return reject(new CoordFailure(r.error.grpc, r.error.message));
            resolve({ revision: r.revision, value: r.value });
          });
          return;
        case "keepalive": {
          const l = this.mvcc.leases.get(req.id);
          if (!l) return reject(new CoordFailure(Errors.leaseNotFound.grpc, Errors.leaseNotFound.message));
          if (this.raft.core.role !== "leader")
            return fail(new FaultlineError(ErrorCode.NotLeader, "not the leader"));
          this.expiry.set(l.id, this.o.clock.now() + l.ttl * 1000);
          resolve(l.ttl);
          return;
        }
        case "ttl": {
          const l = this.mvcc.leases.get(req.id);
          if (!l) return resolve({ ttl: -1, granted: 0, keys: [] });
          const left = Math.max(0, Math.ceil(((this.expiry.get(l.id) ?? 0) - this.o.clock.now()) / 1000));
          resolve({ ttl: left, granted: l.ttl, keys: [...l.keys].sort() });
          return;
        }
      }
    });
  }

  private onMessage(from: NodeId, m: CoordMessage): void {
    if (m.t === "fwd") {
      if (typeof m.id !== "number" || typeof m.req !== "object" || m.req === null) return;
      const reply = (r: Omit<Extract<CoordMessage, { t: "fwd-r" }>, "p" | "t" | "id">) =>
        this.o.transport.send(from, { p: "coord", t: "fwd-r", id: m.id, ...r });
      const run =
        this.raft.core.role === "leader"
          ? this.serve(m.req)
          : Promise.reject(new CoordFailure(Status.Unavailable, "etcdserver: leader changed"));
      run.then(
        (value) => reply({ ok: true, value }),
        (e: unknown) =>
          reply({
            ok: false,
            grpc: e instanceof CoordFailure ? e.grpc : Status.Unavailable,
            message: String((e as Error).message),
          }),
      );
      return;
    }
    if (m.t === "fwd-r") {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      w.timer.cancel();
      w.done(
        m.ok
          ? undefined
          : new CoordFailure(m.grpc ?? Status.Unavailable, m.message ?? "failed at the leader"),
        m.value,
      );
    }
  }

  private failForwards(which: (to: NodeId) => boolean): void {
    for (const [id, w] of this.waiting) {
      if (!which(w.to)) continue;
      this.waiting.delete(id);
      w.timer.cancel();
      w.done(new CoordFailure(Status.Unavailable, "etcdserver: leader changed"));
    }
  }

  private expireLeases(): void {
    if (this.raft.core.role !== "leader") return;
    const now = this.o.clock.now();
    for (const [id, at] of this.expiry) {
      if (at > now || this.revoking.has(id)) continue;
      this.revoke(id);
    }
  }

  /** The detector is certain `subject` exited: end every lease it owned now, not after its TTL. */
  private ownerGone(subject: NodeId): void {
    if (this.raft.core.role !== "leader") return;
    for (const l of this.mvcc.leases.values())
      if (l.owner === subject && !this.revoking.has(l.id)) this.revoke(l.id);
  }

  private revoke(id: number): void {
    this.revoking.add(id);
    this.raft.submit({ c: "lease-revoke", id } satisfies Command, () => {
      this.revoking.delete(id);
      if (!this.mvcc.leases.has(id)) this.expiry.delete(id);
    });
  }

  private newLeaseId(): number {
    // Unique across leaders: a random high part, a local counter below it (53 bits in all). The
    // high part's top bit is always set, so every id has 14 hex digits, as etcd's have a fixed
    // width: tools that find lease ids in text by their length (a test's normalizer did) always
    // find them.
    this.leaseSeq = (this.leaseSeq + 1) % 0x10000;
    return (0x1000000000 + this.o.rng.int(0xfffffffff)) * 0x10000 + this.leaseSeq + 1;
  }

  // ---- watches ---------------------------------------------------------------------------------

  private fanOut(rev: number, events: WatchEvent[]): void {
    for (const w of this.watchers) {
      if (rev < w.next) continue;
      const mine = events.filter((e) => inWatch(w, e.kv.key)).map((e) => (w.prevKv ? e : withoutPrev(e)));
      w.next = rev + 1;
      if (mine.length) w.send(rev, mine);
    }
  }

  /** Send a watcher what it missed since `w.next` (after a snapshot replaced the state). */
  private replay(w: Watcher): boolean {
    const evs = this.mvcc.eventsSince(w.next, w.key, w.end, w.prevKv);
    if (!Array.isArray(evs)) {
      w.compacted(this.mvcc.compacted);
      this.watchers.delete(w);
      return false;
    }
    let i = 0;
    while (i < evs.length) {
      const rev = evs[i]!.kv.mod_revision;
      const batch: WatchEvent[] = [];
      while (i < evs.length && evs[i]!.kv.mod_revision === rev) batch.push(evs[i++]!);
      w.send(rev, batch);
    }
    w.next = this.mvcc.revision + 1;
    return true;
  }

  private catchUpWatchers(): void {
    for (const w of [...this.watchers]) if (w.next <= this.mvcc.revision) this.replay(w);
  }
}

function inWatch(w: Watcher, key: Bytes): boolean {
  if (!w.end) return key === w.key;
  if (w.end === "\u0000") return key >= w.key;
  return key >= w.key && key < w.end;
}

function withoutPrev(e: WatchEvent): WatchEvent {
  return { type: e.type, kv: e.kv };
}

function unwrap(r: Applied<unknown>): { revision: number; value: unknown } {
  if (!r.ok) throw new CoordFailure(r.error.grpc, r.error.message);
  return { revision: r.revision, value: r.value };
}
