import type { NodeId } from "../net/transport.ts";
import type { Entry, HardState, RaftMessage, Snapshot } from "./messages.ts";

export interface RaftOptions {
  /** A leader sends heartbeats this often. */
  heartbeatMs: number;
  /**
   * The fallback election timeout (randomised in [T, 2T)): what starts an election when no
   * detector reports the leader's failure. Also a leader's check-quorum period and the voters'
   * leader lease (a voter that heard from a live leader within T refuses to vote it out).
   */
  electionTimeoutMs: number;
  /** Pre-vote (Raft thesis §9.6): a node that cannot win does not disturb the cluster. */
  preVote: boolean;
  /** Check-quorum: a leader that has not heard from a majority within T steps down. */
  checkQuorum: boolean;
  /** Append messages in flight to one follower before waiting for acknowledgements. */
  maxInflight: number;
  /** Entries per append message. */
  maxBatch: number;
  /**
   * Bytes per append message (by `approxEntryBytes`; one entry always goes, however large): well
   * under the transport's frame limit, which drops a larger message — and a dropped append would
   * be sent again, and dropped again, forever.
   */
  maxBatchBytes: number;
  /** Bytes per snapshot chunk (a snapshot of any size goes in chunks that each fit in a frame). */
  snapshotChunkBytes: number;
  /**
   * Fast-convergence election: once the leader is known to be gone, the follower ranked k in the
   * leader's succession order (most up-to-date first) stands after k × staggerMs.
   */
  staggerMs: number;
  /**
   * A follower that has heard nothing from its leader for this long suspects it (as it would on a
   * detector's suspicion): it stops defending the leader's lease and tries a pre-vote, which wins
   * only if a majority has stopped hearing the leader too. 0: never (only the election timeout).
   */
  suspectAfterMs: number;
}

export const RAFT_DEFAULTS: RaftOptions = {
  heartbeatMs: 50,
  electionTimeoutMs: 500,
  preVote: true,
  checkQuorum: true,
  maxInflight: 64,
  maxBatch: 256,
  maxBatchBytes: 512 * 1024,
  snapshotChunkBytes: 1024 * 1024,
  staggerMs: 4,
  suspectAfterMs: 200,
};

export type Role = "follower" | "pre-candidate" | "candidate" | "leader";

export interface Send {
  to: NodeId;
  msg: RaftMessage;
}

/**
 * What the host does after each input, in this order:
 * 1. if `write`: make it durable, in one atomic batch, after every earlier write — the snapshot
 *    (deleting stored entries up to its index), then `entries` (by index, overwriting), then, if
 *    `truncate`, delete stored entries above `lastIndex`, then `hard`; and call `durable(write.seq)`
 *    once it is durable;
 * 2. send `send` at once (they depend on nothing unwritten);
 * 3. send `sendDurable` once every write up to `durableSeq` is durable;
 * 4. restore the state machine from `applySnapshot`, then apply `apply` in order;
 * 5. answer `reads` once the state machine has applied up to each read's index; fail `readsFailed`.
 */
export interface Ready {
  write?: {
    seq: number;
    hard?: HardState;
    snapshot?: Snapshot;
    entries: Entry[];
    truncate: boolean;
    lastIndex: number;
  };
  send: Send[];
  sendDurable: Send[];
  /** The write sequence number `sendDurable` waits for (0: none). */
  durableSeq: number;
  applySnapshot?: Snapshot;
  apply: Entry[];
  reads: Array<{ id: number; index: number }>;
  readsFailed: number[];
  /** The leader changed (as this node knows it). */
  leader?: { id: NodeId | undefined; term: number };
}

/** What a node restarts from: what its storage holds. */
export interface RaftRestore {
  hard: HardState;
  snapshot?: Snapshot;
  entries: Entry[];
}

/** How the leader sees one follower's log (etcd raft's Progress). */
export interface Progress {
  match: number;
  next: number;
  /** probe: one append at a time until the match is found; replicate: pipelined; snapshot: sent one. */
  state: "probe" | "replicate" | "snapshot";
  probeSent: boolean;
  /** Last index of each append in flight (replicate). */
  inflight: number[];
  /** When the snapshot transfer last moved on (it starts over from a probe if it stalls). */
  snapshotSentAt: number;
  /** The snapshot being sent (kept to the end even if the leader compacts again meanwhile). */
  sending?: Snapshot;
  /** Bytes of it the follower holds; when the chunk after them was sent. */
  snapOffset: number;
  chunkSentAt: number;
  /** Heard from since the last check-quorum. */
  active: boolean;
  /** Since when the oldest append in flight has waited for an acknowledgement (a silent loss is retried). */
  waitingSince: number;
  /** The highest read round it confirmed. */
  read: number;
}
