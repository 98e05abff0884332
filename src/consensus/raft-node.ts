import type { Logger } from "pino";
import type { DurableStore } from "../durable/store.ts";
import type { NodeId, Transport } from "../net/transport.ts";
import { type Clock, setTimerAfterIo, type Timer } from "../runtime/clock.ts";
import { decode, encode } from "../runtime/codec.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import type { Rng } from "../runtime/rng.ts";
import {
  type Entry,
  encodedEntry,
  encodesOver,
  fromWire,
  isRaftMessage,
  type RaftMessage,
  toWire,
} from "./messages.ts";
import { RaftCore } from "./raft-core.ts";
import { RaftStorage, type RaftStorageOptions } from "./raft-storage.ts";
import { RAFT_DEFAULTS, type RaftOptions, type Ready } from "./raft-types.ts";

/** What Raft replicates into. Deterministic: every member applies the same entries to the same result. */
export interface StateMachine {
  /** Apply a committed entry; what it returns goes to the proposer. */
  apply(entry: Entry): unknown;
  /** Replace the whole state by a snapshot's data (`undefined`: the empty state). */
  restore(data: unknown): void;
  /** The current state, for a snapshot (encoded with the codec at once, before anything else runs). */
  snapshot(): unknown;
  /**
   * The current state as a writer that encodes it a step at a time while the state machine goes
   * on applying entries (what it encodes stays the state of the moment it was made). When there
   * is one, RaftNode uses it instead of `snapshot`, a step per event-loop turn, so that a large
   * state never stops the member for longer than a step.
   */
  snapshotWriter?(): SnapshotWriter;
}

export interface SnapshotWriter {
  /** Encode some more; the whole encoding (the codec's, as `snapshot()` would give) once done. */
  step(): Uint8Array | undefined;
}

export interface RaftNodeOptions {
  id: NodeId;
  /** The voters of a new cluster (ignored once a configuration is stored). */
  voters: readonly NodeId[];
  transport: Transport;
  clock: Clock;
  rng: Rng;
  store: DurableStore;
  stateMachine: StateMachine;
  raft?: Partial<RaftOptions>;
  /**
   * Compact the log into a snapshot once this many applied entries follow the last one (default
   * 10,000) and they take at least as many bytes as that snapshot did: a snapshot encodes the
   * whole state, so taking one every N entries would cost more per write as the state grows
   * (100 ms at 50,000 coord revisions); this way its cost per write stays flat.
   */
  compactEvery?: number;
  /**
   * Compact sooner, whatever `compactEvery` says, once the entries since the last snapshot take
   * this many bytes and at least as many as it did (default 64 MiB): what bounds the log in
   * memory when entries are large.
   */
  compactAtBytes?: number;
  /**
   * The largest proposal, encoded; a larger one fails at once with FL_BAD_ARGUMENT. Default
   * 3.5 MiB: one entry must fit in an append message under the transport's 4 MiB frame limit.
   */
  maxProposalBytes?: number;
  /**
   * Commit through the store's `commitAsync` (LMDB: a transaction run and flushed by lmdb-js's
   * write thread) when it has one, so that the event loop goes on during each fdatasync; the
   * writes queued meanwhile go in the next batch. Default false: on a 2-core machine the thread
   * hand-offs cost more than they save — ~130 µs more per commit, and at 64 writers 10-30 % more
   * CPU a put and fewer writes/s than committing on the loop. Worth it where fdatasync is slow
   * (network disks) and cores are not scarce.
   */
  commitOffLoop?: boolean;
  /**
   * When a write becomes durable. Default: group commit — the writes of one event-loop turn are
   * committed together right after it. The simulation passes a random delay (a crash before it
   * loses the write).
   */
  commitDelay?: () => number;
  /**
   * Time between two steps of a snapshot writer (`StateMachine.snapshotWriter`). Default 0: the
   * next event-loop turn. The simulation passes a delay so that entries are applied while a
   * snapshot is written.
   */
  snapshotStepDelay?: () => number;
  /** How the log and snapshots are laid out in the store, and how much background work a commit takes. */
  storage?: RaftStorageOptions;
  logger?: Logger;
  /** Every Ready, before the node performs it (simulation invariants). */
  onReady?: (ready: Ready) => void;
  onLeader?: (leader: NodeId | undefined, term: number) => void;
}

/** How a proposal or a read ended: an error, or the state machine's result. */
export type Done = (error: Error | undefined, result?: unknown) => void;

interface Proposal {
  term: number;
  done: Done;
}

/**
 * A Raft member on a transport, a clock and a durable store: the host of `RaftCore`. It writes what
 * each Ready says (group commit), holds back what must wait for durability, applies committed
 * entries to the state machine, answers proposals and reads, and compacts the log.
 */
export class RaftNode {
  readonly core: RaftCore;
  private readonly sm: StateMachine;
  private readonly proposals = new Map<number, Proposal>();
  private readonly reads = new Map<number, { done: Done; index?: number }>();
  private readonly held: Array<{ seq: number; sends: Ready["sendDurable"] }> = [];
  private readonly queue: Array<NonNullable<Ready["write"]>> = [];
  /** Bytes of the last snapshot, and of the entries applied since (their encodings, made once). */
  private snapshotBytes = 0;
  private appliedBytes = 0;
  private readonly storage: RaftStorage;
  /** Writes whose snapshot this member took itself (written in the background; see RaftStorage). */
  private readonly ownSnapshots = new WeakSet<object>();
  private backgroundTimer: Timer | undefined;
  private durableSeq = 0;
  /** A batch is on its way to disk (stores with `commitAsync`). */
  private committing = false;
  private nextRead = 1;
  private timer: { at: number; t: Timer } | undefined;
  private flushing: Timer | undefined;
  /** Proposals of this event-loop turn, proposed together when it ends (one append, one message per follower). */
  private batch: Array<{ data: unknown; done: Done }> = [];
  private batching: Timer | undefined;
  private off: (() => void) | undefined;
  private stopped = false;
  /** The role last logged (role changes are logged at debug level). */
  private lastRole = "";
  /** A snapshot being written a step a turn: the applied index it is of. */
  private snapshotting: { index: number; appliedBytes: number; timer: Timer } | undefined;
  /** nextSnapshotAt's answer, for the last snapshot index and voter list it was worked out for. */
  private snapshotAt: { from: number; voters: readonly NodeId[]; at: number } | undefined;
  /** Frames that were not well-formed Raft messages (dropped). */
  malformed = 0;
  /**
   * Called when this member can expect messages soon: a proposal or a read it leads starts waiting
   * for the followers, or an append with entries came from the leader (writes come in runs). The
   * real-I/O host may keep its event loop polling meanwhile (see BusyPoller); nothing here
   * depends on it.
   */
  onWaiting: (() => void) | undefined;

  constructor(private readonly o: RaftNodeOptions) {
    this.sm = o.stateMachine;
    this.storage = new RaftStorage(o.store, o.storage);
    const { hard, snapshot, entries } = this.storage.load();
    this.core = new RaftCore(
      o.id,
      { ...RAFT_DEFAULTS, ...o.raft },
      o.rng,
      o.voters,
      { hard, ...(snapshot ? { snapshot } : {}), entries },
      o.clock.now(),
    );
    this.sm.restore(snapshot ? decode(snapshot.data) : undefined);
    this.snapshotBytes = snapshot?.data.byteLength ?? 0;
  }

  get id(): NodeId {
    return this.o.id;
  }

  /** Whether a proposal or a read is waiting for the cluster's answer. */
  get waiting(): boolean {
    return this.proposals.size > 0 || this.reads.size > 0 || this.batch.length > 0;
  }

  start(): void {
    this.scheduleBackground();
    this.off = this.o.transport.on("message", (from, m) => {
      if (typeof m !== "object" || m === null || (m as { p?: unknown }).p !== "raft") return;
      m = fromWire(m);
      if (!isRaftMessage(m)) {
        this.malformed++;
        return;
      }
      this.perform(this.core.receive(this.o.clock.now(), from, m));
      if (m.t === "app" && m.entries.length > 0) this.onWaiting?.();
    });
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.off?.();
    this.timer?.t.cancel();
    this.flushing?.cancel();
    this.batching?.cancel();
    this.snapshotting?.timer.cancel();
    this.snapshotting = undefined;
    this.backgroundTimer?.cancel();
    const e = new FaultlineError(ErrorCode.Stopped, `raft member ${this.o.id} stopped`);
    for (const p of this.batch.splice(0)) p.done(e);
    for (const p of this.proposals.values()) p.done(e);
    for (const r of this.reads.values()) r.done(e);
    this.proposals.clear();
    this.reads.clear();
  }

  /**
   * Replicate `data`; resolves with what the state machine's `apply` returned once it is applied
   * here. Rejects with FL_NOT_LEADER at once on a follower, or later if another leader's entry
   * took its place (then it was certainly not applied).
   */
  propose(data: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => this.submit(data, (e, r) => (e ? reject(e) : resolve(r))));
  }

  /**
   * `propose` with a callback (called synchronously with FL_NOT_LEADER on a follower). The
   * proposals of one event-loop turn go into the log together when the turn ends: one append, one
   * AppendEntries per follower and one durable write for all of them, where one each would make
   * the members' CPU, not the disk, the limit under many concurrent writers.
   */
  submit(data: unknown, done: Done): void {
    if (this.stopped) {
      done(new FaultlineError(ErrorCode.Stopped, `raft member ${this.o.id} stopped`));
      return;
    }
    const max = this.o.maxProposalBytes ?? 3.5 * 1024 * 1024;
    if (encodesOver(data, max)) {
      done(
        new FaultlineError(
          ErrorCode.BadArgument,
          `proposal of ${encode(data).byteLength} bytes is larger than the ${max} a log entry may take; split it`,
        ),
      );
      return;
    }
    if (this.core.role !== "leader") {
      this.proposeNow([{ data, done }]); // fails at once with the leader's whereabouts
      return;
    }
    this.batch.push({ data, done });
    this.batching ??= this.o.clock.setTimer(0, () => {
      this.batching = undefined;
      this.proposeNow(this.batch.splice(0));
    });
  }

  private proposeNow(batch: Array<{ data: unknown; done: Done }>): void {
    if (batch.length === 0 || this.stopped) return;
    let started: ReturnType<RaftCore["propose"]>;
    try {
      started = this.core.propose(
        this.o.clock.now(),
        batch.map((p) => p.data),
      );
    } catch (e) {
      for (const p of batch) p.done(e as Error);
      return;
    }
    for (const [i, p] of batch.entries())
      this.proposals.set(started.index + i, { term: started.term, done: p.done });
    this.perform(started.ready);
    this.onWaiting?.();
  }

  /** Resolves once the local state machine may serve a linearizable read (ReadIndex). Leader only. */
  read(): Promise<void> {
    return new Promise((resolve, reject) => this.readThen((e) => (e ? reject(e) : resolve())));
  }

  /** `read` with a callback. */
  readThen(done: Done): void {
    const id = this.nextRead++;
    let ready: Ready;
    try {
      ready = this.core.read(this.o.clock.now(), [id]);
    } catch (e) {
      done(e as Error);
      return;
    }
    this.reads.set(id, { done });
    this.perform(ready);
    this.onWaiting?.();
  }

  /** The detector's word about the leader (see RaftCore.leaderDown). */
  leaderDown(leader: NodeId, certain: boolean): void {
    this.perform(this.core.leaderDown(this.o.clock.now(), leader, certain));
  }

  // ---- internals ------------------------------------------------------------------------------

  private perform(r: Ready): void {
    if (this.stopped) return;
    const c = this.core;
    if (c.role !== this.lastRole) {
      this.lastRole = c.role;
      this.o.logger?.debug({ role: c.role, term: c.term, leader: c.leader }, "raft role");
    }
    this.o.onReady?.(r);
    if (r.write) {
      if (r.write.snapshot && !r.applySnapshot) this.ownSnapshots.add(r.write);
      this.queue.push(r.write);
      this.scheduleCommit();
    }
    for (const s of r.send) this.sendRaft(s.to, s.msg);
    if (r.sendDurable.length) {
      if (r.durableSeq <= this.durableSeq) for (const s of r.sendDurable) this.sendRaft(s.to, s.msg);
      else this.held.push({ seq: r.durableSeq, sends: r.sendDurable });
    }
    if (r.applySnapshot) {
      let state: unknown;
      try {
        state = decode(r.applySnapshot.data);
      } catch (e) {
        // Authenticated bytes from a member that do not decode: a bug or a version mismatch. This
        // member's log is already replaced by the snapshot, so it cannot go on.
        this.o.logger?.error(
          { err: e, index: r.applySnapshot.meta.index },
          "a snapshot from the leader does not decode: this member stops; restore it from another member's data",
        );
        this.stop();
        return;
      }
      this.sm.restore(state);
      // A snapshot being written is of the state just replaced (and older than this one).
      this.snapshotting?.timer.cancel();
      this.snapshotting = undefined;
      this.snapshotBytes = r.applySnapshot.data.byteLength;
      this.appliedBytes = 0;
      const e = new FaultlineError(ErrorCode.Aborted, "replaced by a snapshot: the outcome is unknown");
      for (const [i, p] of this.proposals) {
        if (i <= r.applySnapshot.meta.index) {
          this.proposals.delete(i);
          p.done(e);
        }
      }
    }
    for (const e of r.apply) {
      const result = this.sm.apply(e);
      this.appliedBytes += encodedEntry(e).byteLength;
      const p = this.proposals.get(e.index);
      if (!p) continue;
      this.proposals.delete(e.index);
      if (p.term === e.term) p.done(undefined, result);
      else
        p.done(new FaultlineError(ErrorCode.NotLeader, "another leader's entry took this proposal's place"));
    }
    for (const { id, index } of r.reads) {
      const w = this.reads.get(id);
      if (w) w.index = index;
    }
    for (const id of r.readsFailed) {
      this.reads
        .get(id)
        ?.done(new FaultlineError(ErrorCode.NotLeader, "leadership lost before the read was confirmed"));
      this.reads.delete(id);
    }
    this.answerReads();
    if (r.leader) this.o.onLeader?.(r.leader.id, r.leader.term);
    this.maybeCompact();
    this.schedule();
  }

  private answerReads(): void {
    for (const [id, w] of this.reads) {
      if (w.index !== undefined && w.index <= this.core.applied) {
        this.reads.delete(id);
        w.done(undefined);
      }
    }
  }

  private maybeCompact(): void {
    if (this.snapshotting || this.storage.writingSnapshot) return;
    const every = this.o.compactEvery ?? 10_000;
    if (this.appliedBytes < this.snapshotBytes) return;
    if (
      this.core.applied < this.nextSnapshotAt(every) &&
      this.appliedBytes < (this.o.compactAtBytes ?? 64 * 1024 * 1024)
    )
      return;
    if (this.core.applied === this.core.log.snapshotIndex) return;
    // Encoded once, here: the bytes are what is stored and what goes to a follower, in chunks.
    if (!this.sm.snapshotWriter) {
      this.compacted(this.core.applied, this.appliedBytes, encode(this.sm.snapshot()));
      return;
    }
    const writer = this.sm.snapshotWriter();
    const later = () => this.o.clock.setTimer(this.o.snapshotStepDelay?.() ?? 0, step);
    const step = () => {
      const s = this.snapshotting;
      if (this.stopped || !s) return;
      const data = writer.step();
      if (data) {
        this.snapshotting = undefined;
        this.compacted(s.index, s.appliedBytes, data);
      } else s.timer = later();
    };
    this.snapshotting = { index: this.core.applied, appliedBytes: this.appliedBytes, timer: later() };
  }

  /**
   * The applied index at which this member takes its next snapshot: every `every` entries, at a
   * phase of its own — its place among the voters (by id) times every/n — and at least every/2
   * after the last one. Members that all snapshotted at the same index would all pause at once
   * (encoding, storing, the GC after), and a quorum would stop together: commits wait, and
   * followers that pause together can suspect a live leader. Staggered, at most one pauses at a
   * time and a quorum goes on.
   */
  private nextSnapshotAt(every: number): number {
    // Worked out again only when the last snapshot or the configuration changed: this runs after
    // every batch of applied entries.
    const from = this.core.log.snapshotIndex;
    const voters = this.core.voters();
    const c = this.snapshotAt;
    if (c && c.from === from && c.voters === voters) return c.at;
    const place = Math.max(0, [...voters].sort().indexOf(this.o.id));
    const phase = Math.floor((every * place) / Math.max(1, voters.length));
    const after = from + Math.ceil(every / 2);
    const at = phase + Math.ceil((after - phase) / every) * every;
    this.snapshotAt = { from, voters, at };
    return at;
  }

  /** A snapshot of the state at `index` is encoded: compact the log up to there. */
  private compacted(index: number, appliedBytesThen: number, data: Uint8Array): void {
    this.snapshotBytes = data.byteLength;
    // What was applied while the snapshot was written is not in it.
    this.appliedBytes -= appliedBytesThen;
    this.perform(this.core.compact(index, data));
  }

  private schedule(): void {
    if (this.stopped) return;
    const at = this.core.wakeAt();
    if (this.timer && this.timer.at <= at) return;
    this.timer?.t.cancel();
    const now = this.o.clock.now();
    // Silence is judged on what arrived: see setTimerAfterIo.
    const t = setTimerAfterIo(this.o.clock, Math.max(0, at - now), () => {
      this.timer = undefined;
      this.perform(this.core.tick(this.o.clock.now()));
    });
    this.timer = { at, t };
  }

  private scheduleCommit(): void {
    if (this.o.commitDelay) {
      // Simulation: each write becomes durable after its own delay, in order.
      const w = this.queue.at(-1)!;
      this.o.clock.setTimer(this.o.commitDelay(), () => this.commitUpTo(w.seq));
      return;
    }
    if (this.flushing) return;
    this.flushing = this.o.clock.setTimer(0, () => {
      this.flushing = undefined;
      const last = this.queue.at(-1);
      if (last) this.commitUpTo(last.seq);
    });
  }

  /**
   * Commit every queued write up to `seq` in one batch, then release what waited for it. Off the
   * event loop (`commitOffLoop`), one batch is on its way to disk at a time, and what queues up
   * meanwhile goes in the next: the member keeps replicating, applying and answering while the
   * disk works.
   */
  private commitUpTo(seq: number): void {
    if (this.stopped || this.committing || (seq <= this.durableSeq && !this.storage.busy)) return;
    const batch = new Map<string, unknown>();
    while (this.queue.length && this.queue[0]!.seq <= seq) {
      const w = this.queue.shift()!;
      this.storage.add(batch, w, this.ownSnapshots.has(w));
    }
    this.storage.background(batch);
    const store = this.o.store;
    if (this.o.commitOffLoop && store.commitAsync && !this.o.commitDelay) {
      this.committing = true;
      store.commitAsync(batch).then(
        () => {
          this.committing = false;
          if (seq > this.durableSeq) this.durableUpTo(seq);
          const last = this.queue.at(-1);
          if (last) this.commitUpTo(last.seq);
          this.scheduleBackground();
        },
        (e: unknown) => {
          // As when a synchronous commit throws: this member cannot go on.
          this.o.logger?.fatal({ err: e }, "raft: the durable store failed to commit; this member stops");
          this.stop();
          this.o.clock.setTimer(0, () => {
            throw e;
          });
        },
      );
      return;
    }
    store.commit(batch);
    if (seq > this.durableSeq) this.durableUpTo(seq);
    this.scheduleBackground();
  }

  /** The storage's next slice of background work in a commit of its own, if no write comes first. */
  private scheduleBackground(): void {
    if (!this.storage.busy || this.backgroundTimer || this.stopped) return;
    this.backgroundTimer = this.o.clock.setTimer(0, () => {
      this.backgroundTimer = undefined;
      this.commitUpTo(this.durableSeq);
    });
  }

  private sendRaft(to: NodeId, msg: RaftMessage): void {
    this.o.transport.send(to, toWire(msg));
  }

  /** Writes up to `seq` are durable: send what waited for them and tell the core. */
  private durableUpTo(seq: number): void {
    if (this.stopped) return;
    this.durableSeq = seq;
    while (this.held.length && this.held[0]!.seq <= seq) {
      for (const s of this.held.shift()!.sends) this.sendRaft(s.to, s.msg);
    }
    this.perform(this.core.durable(this.o.clock.now(), seq));
  }
}
