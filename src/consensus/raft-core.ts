import type { NodeId } from "../net/transport.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import type { Rng } from "../runtime/rng.ts";
import type { Entry, HardState, RaftMessage, Snapshot } from "./messages.ts";
import { MAX_ENTRIES_PER_MESSAGE } from "./messages.ts";
import { RaftLog } from "./raft-log.ts";
import { SnapshotAssembly } from "./raft-snapshot.ts";
import type { Progress, RaftOptions, RaftRestore, Ready, Role } from "./raft-types.ts";

type Msg<T extends RaftMessage["t"]> = Extract<RaftMessage, { t: T }>;

interface PendingWrite {
  seq: number;
  lastIndex: number;
  lastTerm: number;
  hard?: HardState;
}

interface Read {
  id: number;
  index: number;
  round: number;
}

/**
 * Raft (Ongaro & Ousterhout) as a sans-I/O state machine, after etcd's raft package: inputs are
 * messages, ticks, proposals, reads and the host's word that a write is durable; every input
 * returns a `Ready` saying what to write, send and apply. Pre-vote, check-quorum, pipelined and
 * batched replication, snapshots, one-at-a-time membership change, ReadIndex reads.
 *
 * Failover is driven by the detector: `leaderDown` (a certain report that the leader is gone)
 * makes this node tell the other voters (quorum notification) and stand for election after
 * rank × staggerMs, its rank in the succession order the leader last sent (fast convergence: the
 * most up-to-date follower stands first, without a pre-vote: there is no live leader to protect
 * from disruption). The randomised election timeout stays as the fallback.
 *
 * Durability off the critical path: a candidate asks for votes while its new term and self-vote
 * are still being written, and a leader replicates while its own entries are being written; its
 * own vote and its own log count toward a quorum only once durable. Everything another node may
 * rely on — a vote granted, an append acknowledged — leaves only after it is durable (`sendDurable`).
 * See docs/ARCHITECTURE.md for why this is safe.
 */
export class RaftCore {
  role: Role = "follower";
  term: number;
  vote: NodeId | null;
  leader: NodeId | undefined;
  /** The leader, unless it is known for certain to be down (an election is on its way). */
  get liveLeader(): NodeId | undefined {
    return this.leaderDownKnown && this.role !== "leader" ? undefined : this.leader;
  }
  commit: number;
  applied: number;
  readonly log: RaftLog;
  private voterSet: NodeId[];
  private snap: Snapshot | undefined;
  /** Highest index durable here and part of the current log. */
  private stable: number;
  private durableHard: HardState;
  private seq = 0;
  private durableUpTo = 0;
  private pending: PendingWrite[] = [];
  private out: Ready = emptyReady();
  private written = new Map<number, Entry>();
  private truncated = false;
  private hardDirty = false;
  private snapDirty: Snapshot | undefined;
  /** A snapshot arriving in chunks (follower). */
  private readonly incoming = new SnapshotAssembly();
  private lastLeader: { id: NodeId | undefined; term: number };
  // timers
  private electionAt = 0;
  private heartbeatAt = 0;
  private quorumCheckAt = 0;
  private campaignAt = Number.POSITIVE_INFINITY;
  private campaignedAt = Number.NEGATIVE_INFINITY;
  private leaderHeardAt = Number.NEGATIVE_INFINITY;
  private leaderDownKnown = false;
  /** The leader last known for certain to be down (it votes for no candidate). */
  private downLeader: NodeId | undefined;
  /** Candidates of this node's term, ranked below it, whose vote requests it refused. */
  private readonly rivals = new Set<NodeId>();
  private leaderSuspected = false;
  private succ: NodeId[] = [];
  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  private reads: Read[] = [];
  private readsWaiting: number[] = [];
  /** Read rounds: a read registered in round r is confirmed by heartbeats of round ≥ r. */
  private readRound = 1;
  private readRoundSent = 0;

  constructor(
    readonly id: NodeId,
    private readonly options: RaftOptions,
    private readonly rng: Rng,
    /** The voters of a cluster that has never committed a configuration (every member the same). */
    initialVoters: readonly NodeId[],
    restore: RaftRestore = { hard: { term: 0, vote: null }, entries: [] },
    now = 0,
  ) {
    this.term = restore.hard.term;
    this.vote = restore.hard.vote;
    this.durableHard = { ...restore.hard };
    this.snap = restore.snapshot;
    this.log = new RaftLog(restore.snapshot?.meta, restore.entries);
    this.commit = this.applied = this.log.snapshotIndex;
    this.stable = this.log.lastIndex();
    this.voterSet = [...initialVoters];
    this.recomputeVoters();
    this.lastLeader = { id: undefined, term: this.term };
    this.resetElection(now);
  }

  // ---- inspection ---------------------------------------------------------------------------

  voters(): readonly NodeId[] {
    return this.voterSet;
  }

  /** When `tick` must next run. */
  wakeAt(): number {
    if (this.role === "leader") return Math.min(this.heartbeatAt, this.quorumCheckAt);
    return Math.min(this.electionAt, this.campaignAt, this.suspectAt());
  }

  // ---- inputs -------------------------------------------------------------------------------

  tick(now: number): Ready {
    if (this.role === "leader") {
      if (now >= this.quorumCheckAt) this.checkQuorum(now);
      if (this.role === "leader" && now >= this.heartbeatAt) this.heartbeat(now);
    } else {
      // Silence from the leader: suspect it, as a detector would.
      if (now >= this.suspectAt() && this.leader !== undefined) this.suspect(now);
      if (now < this.campaignAt && now < this.electionAt) return this.flush();
      this.campaignAt = Number.POSITIVE_INFINITY;
      // A pre-vote keeps a node that only lost touch from disrupting a live leader. A leader known
      // for certain to be gone has nothing to protect: the first in the succession stands at once
      // (a round trip sooner). The others still pre-vote: one that learned first and stood for
      // real while the first was still busy split the vote (2 rounds in 6 on loopback, each
      // retried 50 ms later), where a pre-vote leaves its term alone.
      if (this.isVoter())
        this.campaign(now, this.options.preVote && !(this.leaderDownKnown && this.rank(this.id) === 0));
      else this.resetElection(now);
    }
    return this.flush();
  }

  /** When silence from the leader makes this follower suspect it. */
  private suspectAt(): number {
    if (
      !this.options.suspectAfterMs ||
      this.leader === undefined ||
      this.leaderSuspected ||
      this.role !== "follower"
    ) {
      return Number.POSITIVE_INFINITY;
    }
    return this.leaderHeardAt + this.options.suspectAfterMs;
  }

  /** Propose entries (leader only). Returns the index of the first, or throws NotLeader. */
  propose(now: number, data: readonly unknown[]): { index: number; term: number; ready: Ready } {
    this.requireLeader();
    const index = this.log.lastIndex() + 1;
    for (const d of data)
      this.append({ index: this.log.lastIndex() + 1, term: this.term, type: "normal", data: d });
    this.broadcastAppend(now);
    return { index, term: this.term, ready: this.flush() };
  }

  /** Add or remove one voter (leader only; one change at a time, effective once appended). */
  proposeConfig(now: number, voters: readonly NodeId[]): { index: number; ready: Ready } {
    this.requireLeader();
    if (this.configPendingAbove(this.commit)) {
      throw new FaultlineError(
        ErrorCode.Proposal,
        "a membership change is still uncommitted; retry after it commits",
      );
    }
    const now1 = new Set(this.voterSet);
    const next = new Set(voters);
    const diff = [...now1].filter((v) => !next.has(v)).length + [...next].filter((v) => !now1.has(v)).length;
    if (diff !== 1 || next.size === 0) {
      throw new FaultlineError(ErrorCode.Proposal, "a membership change adds or removes exactly one voter");
    }
    const index = this.log.lastIndex() + 1;
    this.append({ index, term: this.term, type: "config", data: { voters: [...voters] } });
    this.broadcastAppend(now);
    return { index, ready: this.flush() };
  }

  /**
   * A linearizable read (ReadIndex, Raft thesis §6.4): once a majority confirms this node is still
   * the leader, `reads` in a Ready carries `{id, index}`; the host answers once it has applied
   * `index`. No clock assumption. Leader only.
   */
  read(now: number, ids: readonly number[]): Ready {
    this.requireLeader();
    if (this.log.term(this.commit) !== this.term) this.readsWaiting.push(...ids);
    else this.startReads(now, ids);
    return this.flush();
  }

  /** The host's word that every write up to `seq` is durable. */
  durable(now: number, seq: number): Ready {
    if (seq <= this.durableUpTo) return this.flush();
    this.durableUpTo = seq;
    while (this.pending.length && this.pending[0]!.seq <= seq) {
      const p = this.pending.shift()!;
      if (p.hard) this.durableHard = p.hard;
      if (this.log.term(p.lastIndex) === p.lastTerm && p.lastIndex > this.stable) this.stable = p.lastIndex;
    }
    if (this.role === "candidate") this.countVotes(now);
    else if (this.role === "leader") this.maybeCommit(now);
    this.releaseApply();
    return this.flush();
  }

  /**
   * The detector says the leader is gone. `certain` (process-exit, a fenced host-crash): tell the
   * other voters and stand by rank. Suspected (a frozen or cut-off leader): stop defending the
   * leader's lease and try a pre-vote by rank — it succeeds only if a majority has stopped hearing
   * from the leader too, so a leader that one follower cannot reach is not voted out.
   */
  leaderDown(now: number, leader: NodeId, certain: boolean): Ready {
    if (this.role === "leader" || leader !== this.leader) return this.flush();
    if (!certain) {
      if (!this.leaderSuspected) this.suspect(now);
      return this.flush();
    }
    if (!this.leaderDownKnown) {
      this.leaderDownKnown = true;
      for (const v of this.voterSet) {
        if (v !== this.id && v !== leader) this.send(v, { p: "raft", t: "down", term: this.term, leader });
      }
      this.scheduleCampaign(now);
    }
    return this.flush();
  }

  /** Replace the log up to `index` (applied here) by a snapshot of the state machine there. */
  compact(index: number, data: Uint8Array): Ready {
    if (index > this.applied || index <= this.log.snapshotIndex) return this.flush();
    const term = this.log.term(index)!;
    this.snap = { meta: { index, term, voters: this.votersAt(index) }, data };
    this.log.compactTo(index, term);
    this.snapDirty = this.snap;
    return this.flush();
  }

  receive(now: number, from: NodeId, m: RaftMessage): Ready {
    if (m.term > this.term) {
      if (m.t === "vote") {
        if (this.inLease(now, m.down)) {
          // A live leader is known here: do not let a cut-off node disrupt it (Raft thesis §4.2.3).
          if (m.pre) this.send(from, { p: "raft", t: "vote-r", term: this.term, pre: true, granted: false });
          return this.flush();
        }
        if (!m.pre) this.becomeFollower(now, m.term, undefined);
      } else if (m.t === "vote-r") {
        if (!(m.pre && m.granted)) this.becomeFollower(now, m.term, undefined);
      } else if (m.t === "app" || m.t === "hb" || m.t === "snap") {
        this.becomeFollower(now, m.term, from);
      } else if (m.t !== "down") {
        this.becomeFollower(now, m.term, undefined);
      }
    } else if (m.term < this.term) {
      // A stale leader or candidate: tell it the current term so that it steps down.
      if (m.t === "app" || m.t === "hb" || m.t === "snap") {
        this.send(from, { p: "raft", t: "app-r", term: this.term, ok: false, index: 0, reject: 0, hint: 0 });
      } else if (m.t === "vote" && m.pre) {
        this.send(from, { p: "raft", t: "vote-r", term: this.term, pre: true, granted: false });
      }
      return this.flush();
    }
    switch (m.t) {
      case "vote":
        this.onVote(now, from, m);
        break;
      case "vote-r":
        this.onVoteResponse(now, from, m);
        break;
      case "app":
        this.onAppend(now, from, m);
        break;
      case "app-r":
        this.onAppendResponse(now, from, m);
        break;
      case "hb":
        this.onHeartbeat(now, from, m);
        break;
      case "hb-r":
        this.onHeartbeatResponse(now, from, m);
        break;
      case "snap":
        this.onSnapshot(now, from, m);
        break;
      case "snap-r":
        this.onSnapshotResponse(now, from, m);
        break;
      case "down":
        if (
          m.term === this.term &&
          this.role !== "leader" &&
          m.leader === this.leader &&
          !this.leaderDownKnown
        ) {
          this.leaderDownKnown = true;
          this.scheduleCampaign(now);
        }
        break;
    }
    return this.flush();
  }

  // ---- elections ----------------------------------------------------------------------------

  private isVoter(): boolean {
    return this.voterSet.includes(this.id);
  }

  private inLease(now: number, down: Msg<"vote">["down"]): boolean {
    if (!this.options.checkQuorum || this.leader === undefined) return false;
    if (down && down.leader === this.leader && down.term === this.term) this.leaderDownKnown = true;
    if (this.leaderDownKnown || this.leaderSuspected) return false;
    return now - this.leaderHeardAt < this.options.electionTimeoutMs;
  }

  /** A node's place in the succession order the leader last sent (unknown ones after, by id). */
  private rank(id: NodeId): number {
    const r = this.succ.indexOf(id);
    return r >= 0 ? r : this.succ.length + Math.max(0, this.voterSet.indexOf(id));
  }

  /** Stop defending the leader's lease and try a pre-vote by rank. */
  private suspect(now: number): void {
    this.leaderSuspected = true;
    this.scheduleCampaign(now);
  }

  private scheduleCampaign(now: number): void {
    this.campaignAt = Math.min(this.campaignAt, now + this.rank(this.id) * this.options.staggerMs);
  }

  private campaign(now: number, pre: boolean): void {
    this.campaignedAt = now;
    this.resetElection(now);
    this.votes.clear();
    const down =
      this.leaderDownKnown && this.leader !== undefined
        ? { leader: this.leader, term: this.term }
        : undefined;
    if (down) this.downLeader = down.leader;
    if (pre) {
      this.role = "pre-candidate";
    } else {
      this.role = "candidate";
      this.term += 1;
      this.vote = this.id;
      this.hardDirty = true;
      this.setLeader(undefined);
    }
    this.votes.set(this.id, true);
    if (!pre) this.rivals.clear();
    // While the leader is known or suspected gone, a round that stalls (a voter still defending
    // the leader's lease a moment ago, a lost message) is retried after a heartbeat, not after
    // the election timeout.
    if (this.leaderDownKnown || this.leaderSuspected) {
      this.campaignAt = now + this.options.heartbeatMs + this.rank(this.id) * this.options.staggerMs;
    }
    const term = pre ? this.term + 1 : this.term;
    for (const v of this.voterSet) {
      if (v === this.id) continue;
      const m: RaftMessage = {
        p: "raft",
        t: "vote",
        term,
        pre,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        ...(down ? { down } : {}),
      };
      this.send(v, m);
    }
    this.countVotes(now);
  }

  private onVote(now: number, from: NodeId, m: Msg<"vote">): void {
    const upToDate = this.log.isUpToDate(m.lastIndex, m.lastTerm);
    if (m.pre) {
      // Two followers that lost the leader at nearly the same moment both ask: a pre-candidate
      // yields only to a better one (a longer log, or an equal log and a smaller id: an order
      // every node agrees on) and asks again itself, so that one of them wins at once instead
      // of both splitting the vote.
      const rival = this.role === "pre-candidate" || this.role === "candidate";
      const equal = m.lastTerm === this.log.lastTerm() && m.lastIndex === this.log.lastIndex();
      const better = upToDate && (!equal || cmp(from, this.id) < 0);
      const granted = m.term > this.term && upToDate && (!rival || better);
      this.send(from, { p: "raft", t: "vote-r", term: granted ? m.term : this.term, pre: true, granted });
      // Ask again (at most once a millisecond: never a message storm).
      if (rival && !granted && this.role === "pre-candidate" && now - this.campaignedAt >= 1)
        this.campaign(now, true);
      return;
    }
    const granted = (this.vote === null || this.vote === from) && upToDate;
    if (granted) {
      this.vote = from;
      this.hardDirty = true;
      this.resetElection(now);
    }
    this.sendDurably(from, { p: "raft", t: "vote-r", term: this.term, pre: false, granted });
    // A split vote: two candidates in one term, each voted for itself. The better of the two, in
    // the order a pre-candidate yields by, remembers the rival; once the rest cannot make it a
    // majority (see retryIfLost), it stands again at once (in the next term, which the rival
    // grants) instead of both waiting out the retry (a heartbeat, or an election timeout).
    if (!granted && this.role === "candidate" && this.vote === this.id) {
      const equal = m.lastTerm === this.log.lastTerm() && m.lastIndex === this.log.lastIndex();
      const better = upToDate && (!equal || cmp(from, this.id) < 0);
      if (!better) {
        this.rivals.add(from);
        this.retryIfLost(now);
      }
    }
  }

  /**
   * A candidate with a rival it ranks above stands again at once when nobody can win the term:
   * not itself (not counting the rivals, each of which voted for itself, the leader known to be
   * down, or any voter that refused, too few are left for a majority), and no rival (not counting
   * this node, the down leader or the other rivals). While anyone still can, nothing changes: a
   * candidate about to win does not throw its term away, and a rival about to win is not
   * disrupted. (Three voters with the leader dead: a full split, settled at once.)
   */
  private retryIfLost(now: number): void {
    if (this.role !== "candidate" || this.rivals.size === 0) return;
    const q = quorum(this.voterSet.length);
    let mine = 0;
    for (const v of this.voterSet) {
      const vote = this.votes.get(v);
      if (vote === true || (!this.rivals.has(v) && v !== this.downLeader && vote !== false)) mine++;
    }
    if (mine >= q) return;
    for (const r of this.rivals) {
      let theirs = 0;
      for (const v of this.voterSet) {
        if (v !== this.id && v !== this.downLeader && (v === r || !this.rivals.has(v))) theirs++;
      }
      if (theirs >= q) return;
    }
    this.campaignAt = Math.min(this.campaignAt, Math.max(now, this.campaignedAt + 1));
  }

  private onVoteResponse(now: number, from: NodeId, m: Msg<"vote-r">): void {
    const expecting = m.pre ? this.role === "pre-candidate" : this.role === "candidate";
    if (!expecting || !this.voterSet.includes(from)) return;
    this.votes.set(from, m.granted);
    this.countVotes(now);
    if (!m.pre && !m.granted) this.retryIfLost(now);
  }

  private countVotes(now: number): void {
    let yes = 0;
    let no = 0;
    for (const v of this.voterSet) {
      const g = this.votes.get(v);
      // Our own real vote counts only once it is durable.
      const own =
        v === this.id &&
        this.role === "candidate" &&
        !(this.durableHard.term === this.term && this.durableHard.vote === this.id);
      if (g === true && !own) yes++;
      else if (g === false) no++;
    }
    const q = quorum(this.voterSet.length);
    if (yes >= q) {
      if (this.role === "pre-candidate") this.campaign(now, false);
      else if (this.role === "candidate") this.becomeLeader(now);
    } else if (no >= q) {
      this.becomeFollower(now, this.term, undefined);
    }
  }

  private becomeFollower(now: number, term: number, leader: NodeId | undefined): void {
    if (this.role === "leader") this.failReads();
    if (term > this.term) {
      this.term = term;
      this.vote = null;
      this.hardDirty = true;
      this.incoming.clear(); // a new term's leader sends its own snapshot
    }
    this.role = "follower";
    this.progress.clear();
    this.votes.clear();
    this.campaignAt = Number.POSITIVE_INFINITY;
    this.leaderDownKnown = false;
    this.leaderSuspected = false;
    this.setLeader(leader);
    if (leader !== undefined) this.leaderHeardAt = now;
    this.resetElection(now);
  }

  private becomeLeader(now: number): void {
    this.incoming.clear();
    this.downLeader = undefined;
    this.role = "leader";
    this.setLeader(this.id);
    this.progress.clear();
    for (const v of this.voterSet) if (v !== this.id) this.progress.set(v, this.newProgress());
    this.quorumCheckAt = now + this.options.electionTimeoutMs;
    this.append({ index: this.log.lastIndex() + 1, term: this.term, type: "noop" });
    this.broadcastAppend(now);
    this.heartbeat(now);
  }

  private resetElection(now: number): void {
    this.electionAt = now + this.options.electionTimeoutMs * (1 + this.rng.float());
  }

  // ---- replication: follower ----------------------------------------------------------------

  private heardFromLeader(now: number, from: NodeId): void {
    if (this.role === "leader") throw this.bug(`two leaders in term ${this.term}: ${this.id} and ${from}`);
    if (this.role !== "follower") this.becomeFollower(now, this.term, from);
    if (this.leader !== from) this.setLeader(from);
    this.leaderHeardAt = now;
    this.leaderDownKnown = false;
    this.downLeader = undefined;
    this.leaderSuspected = false;
    this.campaignAt = Number.POSITIVE_INFINITY;
    this.resetElection(now);
  }

  private onAppend(now: number, from: NodeId, m: Msg<"app">): void {
    this.heardFromLeader(now, from);
    const reply = (ok: boolean, index: number, reject: number, hint: number) =>
      this.sendDurably(from, { p: "raft", t: "app-r", term: this.term, ok, index, reject, hint });
    if (m.prevIndex < this.commit) {
      reply(true, this.commit, 0, 0);
      return;
    }
    if (this.log.term(m.prevIndex) !== m.prevTerm) {
      reply(false, 0, m.prevIndex, this.rejectHint(m.prevIndex));
      return;
    }
    const { written, truncatedFrom } = this.log.merge(m.entries);
    if (truncatedFrom !== undefined) {
      if (truncatedFrom <= this.commit) throw this.bug(`truncating committed entry ${truncatedFrom}`);
      this.truncated = true;
      this.stable = Math.min(this.stable, truncatedFrom - 1);
      this.recomputeVoters();
    }
    for (const e of written) this.written.set(e.index, e);
    if (written.some((e) => e.type === "config")) this.recomputeVoters();
    const lastNew = m.prevIndex + m.entries.length;
    if (m.commit > this.commit) this.commitTo(Math.min(m.commit, lastNew));
    reply(true, lastNew, 0, 0);
  }

  /** Where the leader should retry: before the conflicting term here, or our end. */
  private rejectHint(prevIndex: number): number {
    const last = this.log.lastIndex();
    if (prevIndex > last) return last;
    const t = this.log.term(prevIndex);
    let i = prevIndex - 1;
    while (i > this.commit && this.log.term(i) === t) i--;
    return i;
  }

  private onHeartbeat(now: number, from: NodeId, m: Msg<"hb">): void {
    this.heardFromLeader(now, from);
    this.succ = m.succ;
    if (m.commit > this.commit) this.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send(from, { p: "raft", t: "hb-r", term: this.term, read: m.read });
  }

  private onSnapshot(now: number, from: NodeId, m: Msg<"snap">): void {
    this.heardFromLeader(now, from);
    const meta = m.meta;
    const reply = (index: number) =>
      this.sendDurably(from, { p: "raft", t: "app-r", term: this.term, ok: true, index, reject: 0, hint: 0 });
    if (meta.index <= this.commit) {
      this.incoming.clear();
      reply(this.commit);
      return;
    }
    if (this.log.term(meta.index) === meta.term) {
      this.incoming.clear();
      this.commitTo(meta.index);
      reply(meta.index);
      return;
    }
    const got = this.incoming.take(m);
    if ("holds" in got) {
      // Where this node stands (after a loss, a duplicate or a restart too): the leader goes on from there.
      this.send(from, { p: "raft", t: "snap-r", term: this.term, index: meta.index, offset: got.holds });
      return;
    }
    const snapshot: Snapshot = { meta, data: got.data };
    this.log.compactTo(meta.index, meta.term);
    // compactTo kept nothing (the entry at meta.index differed or was missing): the log is the snapshot.
    this.truncated = true;
    this.stable = 0;
    this.written.clear();
    this.snap = snapshot;
    this.snapDirty = snapshot;
    this.commit = this.applied = meta.index;
    this.out.applySnapshot = snapshot;
    this.out.apply = [];
    this.recomputeVoters();
    reply(meta.index);
  }

  // ---- replication: leader ------------------------------------------------------------------

  private newProgress(): Progress {
    return {
      match: 0,
      next: this.log.lastIndex() + 1,
      state: "probe",
      probeSent: false,
      inflight: [],
      snapshotSentAt: 0,
      snapOffset: 0,
      chunkSentAt: 0,
      active: true,
      waitingSince: 0,
      read: 0,
    };
  }

  private broadcastAppend(now: number): void {
    for (const id of this.progress.keys()) this.sendAppend(now, id);
  }

  /** Send what `to` lacks, as far as the pipeline allows. */
  private sendAppend(now: number, to: NodeId): void {
    const pr = this.progress.get(to);
    if (!pr) return;
    for (;;) {
      if (pr.state === "snapshot") return;
      if (pr.state === "probe" && pr.probeSent) return;
      if (
        pr.state === "replicate" &&
        (pr.inflight.length >= this.options.maxInflight || pr.next > this.log.lastIndex())
      ) {
        return;
      }
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined) {
        if (!this.snap) throw this.bug(`no snapshot to send ${to} (next ${pr.next})`);
        pr.state = "snapshot";
        pr.snapshotSentAt = now;
        pr.sending = this.snap;
        pr.snapOffset = 0;
        this.sendChunk(now, to, pr);
        return;
      }
      const max = Math.min(this.options.maxBatch, MAX_ENTRIES_PER_MESSAGE);
      const entries = this.log.slice(pr.next, this.log.lastIndex(), max, this.options.maxBatchBytes);
      this.send(to, {
        p: "raft",
        t: "app",
        term: this.term,
        prevIndex,
        prevTerm,
        entries,
        commit: this.commit,
      });
      if (pr.state === "probe") {
        pr.probeSent = true;
        return;
      }
      if (!pr.inflight.length) pr.waitingSince = now;
      pr.next = prevIndex + entries.length + 1;
      pr.inflight.push(pr.next - 1);
    }
  }

  /** Send `to` the chunk of the snapshot in transfer that follows what it holds. */
  private sendChunk(now: number, to: NodeId, pr: Progress): void {
    const snap = pr.sending;
    if (!snap) return;
    const size = Math.max(1, this.options.snapshotChunkBytes);
    pr.chunkSentAt = now;
    this.send(to, {
      p: "raft",
      t: "snap",
      term: this.term,
      meta: snap.meta,
      offset: pr.snapOffset,
      total: snap.data.byteLength,
      chunk: snap.data.subarray(pr.snapOffset, pr.snapOffset + size),
    });
  }

  private onSnapshotResponse(now: number, from: NodeId, m: Msg<"snap-r">): void {
    const pr = this.role === "leader" ? this.progress.get(from) : undefined;
    if (pr?.state !== "snapshot" || !pr.sending) return;
    pr.active = true;
    if (m.index !== pr.sending.meta.index || m.offset >= pr.sending.data.byteLength) return; // (the last chunk is answered by an app-r)
    if (m.offset > pr.snapOffset) {
      pr.snapOffset = m.offset;
      pr.snapshotSentAt = now;
      this.sendChunk(now, from, pr);
    } else if (m.offset < pr.snapOffset && now - pr.snapshotSentAt >= this.options.heartbeatMs) {
      // The follower holds less than the leader thought (it lost a chunk, or restarted) and the
      // transfer has not moved for a heartbeat: go on from where it is. (A stale reply while the
      // transfer moves is ignored, so duplicates cannot send it back and forth.)
      pr.snapOffset = m.offset;
      this.sendChunk(now, from, pr);
    }
  }

  private onAppendResponse(now: number, from: NodeId, m: Msg<"app-r">): void {
    const pr = this.role === "leader" ? this.progress.get(from) : undefined;
    if (!pr) return;
    pr.active = true;
    if (m.ok) {
      if (m.index > pr.match) {
        pr.match = m.index;
        pr.waitingSince = now;
        if (pr.next <= m.index) pr.next = m.index + 1;
        pr.inflight = pr.inflight.filter((i) => i > m.index);
        if (pr.state === "probe" || (pr.state === "snapshot" && pr.match >= (pr.sending?.meta.index ?? 0))) {
          pr.state = "replicate";
          pr.next = Math.max(pr.next, pr.match + 1);
          pr.inflight = [];
          delete pr.sending;
        }
        this.maybeCommit(now);
      } else if (pr.state === "probe") {
        pr.probeSent = false;
      }
      this.sendAppend(now, from);
      return;
    }
    if (pr.state === "replicate") {
      if (m.reject <= pr.match) return; // stale
      this.toProbe(pr, pr.match + 1);
    } else if (pr.state === "probe") {
      if (m.reject !== pr.next - 1) return; // stale
      this.toProbe(pr, Math.max(pr.match + 1, Math.min(m.reject, m.hint + 1)));
    } else {
      return;
    }
    this.sendAppend(now, from);
  }

  private toProbe(pr: Progress, next: number): void {
    delete pr.sending;
    pr.state = "probe";
    pr.next = next;
    pr.probeSent = false;
    pr.inflight = [];
  }

  private onHeartbeatResponse(now: number, from: NodeId, m: Msg<"hb-r">): void {
    const pr = this.role === "leader" ? this.progress.get(from) : undefined;
    if (!pr) return;
    pr.active = true;
    if (m.read > pr.read) pr.read = m.read;
    this.confirmReads();
    if (pr.match < this.log.lastIndex()) {
      if (pr.state === "probe") pr.probeSent = false;
      else if (
        pr.state === "replicate" &&
        pr.inflight.length &&
        now - pr.waitingSince >= 2 * this.options.heartbeatMs
      ) {
        this.toProbe(pr, pr.match + 1); // an append or its ack was lost: find the match again
      } else if (pr.state === "snapshot" && now - pr.snapshotSentAt >= this.options.electionTimeoutMs) {
        this.toProbe(pr, pr.match + 1); // the transfer stalled: start over
      } else if (pr.state === "snapshot" && now - pr.chunkSentAt >= 2 * this.options.heartbeatMs) {
        this.sendChunk(now, from, pr); // a chunk or its reply was lost: send it again
        return;
      }
      this.sendAppend(now, from);
    }
  }

  private heartbeat(now: number): void {
    this.heartbeatAt = now + this.options.heartbeatMs;
    const succ = [...this.progress.entries()]
      .filter(([id]) => this.voterSet.includes(id))
      .sort((a, b) => b[1].match - a[1].match || cmp(a[0], b[0]))
      .map(([id]) => id);
    this.readRoundSent = this.readRound;
    for (const [id, pr] of this.progress) {
      this.send(id, {
        p: "raft",
        t: "hb",
        term: this.term,
        commit: Math.min(this.commit, pr.match),
        read: this.readRound,
        succ,
      });
    }
  }

  private checkQuorum(now: number): void {
    this.quorumCheckAt = now + this.options.electionTimeoutMs;
    if (!this.options.checkQuorum) return;
    let active = this.isVoter() ? 1 : 0;
    for (const [id, pr] of this.progress) {
      if (pr.active && this.voterSet.includes(id)) active++;
      pr.active = false;
    }
    if (active < quorum(this.voterSet.length)) this.becomeFollower(now, this.term, undefined);
  }

  private maybeCommit(now: number): void {
    const matches = this.voterSet.map((v) =>
      v === this.id ? this.stable : (this.progress.get(v)?.match ?? 0),
    );
    matches.sort((a, b) => b - a);
    const n = matches[quorum(this.voterSet.length) - 1]!;
    if (n <= this.commit || this.log.term(n) !== this.term) return;
    this.commitTo(n);
    if (this.readsWaiting.length) this.startReads(now, this.readsWaiting.splice(0));
    // A committed configuration that leaves this leader out ends its leadership.
    if (!this.isVoter() && !this.configPendingAbove(this.commit))
      this.becomeFollower(now, this.term, undefined);
  }

  // ---- reads --------------------------------------------------------------------------------

  private startReads(now: number, ids: readonly number[]): void {
    if (this.readRoundSent === this.readRound) this.readRound++;
    for (const id of ids) this.reads.push({ id, index: this.commit, round: this.readRound });
    if (this.voterSet.length === 1 && this.isVoter()) {
      this.confirmReads();
      return;
    }
    if (this.readRoundSent !== this.readRound) this.heartbeatRound(now);
  }

  /** Heartbeats now (a read is waiting for a quorum's word), without moving the heartbeat timer. */
  private heartbeatRound(now: number): void {
    const at = this.heartbeatAt;
    this.heartbeat(now);
    this.heartbeatAt = at;
  }

  private confirmReads(): void {
    if (!this.reads.length) return;
    const rounds = this.voterSet.map((v) =>
      v === this.id ? this.readRound : (this.progress.get(v)?.read ?? 0),
    );
    rounds.sort((a, b) => b - a);
    const confirmed = rounds[quorum(this.voterSet.length) - 1]!;
    while (this.reads.length && this.reads[0]!.round <= confirmed) {
      const r = this.reads.shift()!;
      this.out.reads.push({ id: r.id, index: r.index });
    }
  }

  private failReads(): void {
    for (const r of this.reads) this.out.readsFailed.push(r.id);
    this.out.readsFailed.push(...this.readsWaiting);
    this.reads = [];
    this.readsWaiting = [];
  }

  // ---- log, commit, output ------------------------------------------------------------------

  private append(e: Entry): void {
    this.log.push(e);
    this.written.set(e.index, e);
    if (e.type === "config") this.recomputeVoters();
  }

  private commitTo(index: number): void {
    if (index <= this.commit) return;
    this.commit = index;
    this.incoming.clearUpTo(index); // no longer needed
    this.releaseApply();
  }

  /** Hand committed entries that are durable here to the state machine. */
  private releaseApply(): void {
    const upTo = Math.min(this.commit, this.stable);
    if (upTo <= this.applied) return;
    this.out.apply.push(...this.log.slice(this.applied + 1, upTo));
    this.applied = upTo;
  }

  private votersAt(index: number): NodeId[] {
    for (let i = Math.min(index, this.log.lastIndex()); i > this.log.snapshotIndex; i--) {
      const e = this.log.entry(i)!;
      if (e.type === "config") return [...(e.data as { voters: NodeId[] }).voters];
    }
    return this.snap ? [...this.snap.meta.voters] : [...this.voterSet];
  }

  private configPendingAbove(index: number): boolean {
    for (let i = this.log.lastIndex(); i > index; i--) if (this.log.entry(i)?.type === "config") return true;
    return false;
  }

  private recomputeVoters(): void {
    const before = this.voterSet;
    this.voterSet = this.votersAt(this.log.lastIndex());
    if (this.role !== "leader" || sameSet(before, this.voterSet)) return;
    for (const v of this.voterSet)
      if (v !== this.id && !this.progress.has(v)) this.progress.set(v, this.newProgress());
    for (const v of this.progress.keys()) if (!this.voterSet.includes(v)) this.progress.delete(v);
  }

  private setLeader(id: NodeId | undefined): void {
    this.leader = id;
    if (this.lastLeader.id !== id || this.lastLeader.term !== this.term) {
      this.lastLeader = { id, term: this.term };
      this.out.leader = { ...this.lastLeader };
    }
  }

  private send(to: NodeId, msg: RaftMessage): void {
    this.out.send.push({ to, msg });
  }

  private sendDurably(to: NodeId, msg: RaftMessage): void {
    this.out.sendDurable.push({ to, msg });
  }

  private requireLeader(): void {
    if (this.role !== "leader") {
      throw new FaultlineError(
        ErrorCode.NotLeader,
        `${this.id} is not the leader${this.leader ? `; the leader is ${this.leader}` : "; no leader is known yet"}`,
      );
    }
  }

  private bug(what: string): FaultlineError {
    return new FaultlineError(ErrorCode.Invariant, `raft ${this.id}: ${what}`);
  }

  private flush(): Ready {
    const out = this.out;
    this.out = emptyReady();
    const hard = this.hardDirty ? { term: this.term, vote: this.vote } : undefined;
    if (hard || this.written.size || this.truncated || this.snapDirty) {
      const last = this.log.lastIndex();
      const entries = [...this.written.values()]
        .filter((e) => e.index <= last && e.index > this.log.snapshotIndex && this.log.entry(e.index) === e)
        .sort((a, b) => a.index - b.index);
      const seq = ++this.seq;
      out.write = {
        seq,
        ...(hard ? { hard } : {}),
        ...(this.snapDirty ? { snapshot: this.snapDirty } : {}),
        entries,
        truncate: this.truncated,
        lastIndex: last,
      };
      this.pending.push({ seq, lastIndex: last, lastTerm: this.log.lastTerm(), ...(hard ? { hard } : {}) });
      this.written.clear();
      this.truncated = false;
      this.hardDirty = false;
      this.snapDirty = undefined;
    }
    out.durableSeq = out.sendDurable.length ? this.seq : 0;
    return out;
  }
}

function emptyReady(): Ready {
  return { send: [], sendDurable: [], durableSeq: 0, apply: [], reads: [], readsFailed: [] };
}

export function quorum(n: number): number {
  return Math.floor(n / 2) + 1;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
