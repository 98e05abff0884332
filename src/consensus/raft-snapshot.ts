import type { RaftMessage, SnapshotMeta } from "./messages.ts";

type Chunk = Extract<RaftMessage, { t: "snap" }>;

/**
 * A follower's snapshot arriving in chunks. Chunks are taken in order and from one leader's term
 * (one leader, one snapshot at an index: the bytes of two chunks always belong together); a first
 * chunk of another transfer starts over, and a late duplicate of one already held changes nothing.
 */
export class SnapshotAssembly {
  private cur:
    | { term: number; meta: SnapshotMeta; total: number; parts: Uint8Array[]; received: number }
    | undefined;

  /** The whole snapshot once `m` completes it; otherwise how many bytes of its transfer are held (0: none). */
  take(m: Chunk): { data: Uint8Array } | { holds: number } {
    const same =
      this.cur !== undefined &&
      this.cur.term === m.term &&
      this.cur.meta.index === m.meta.index &&
      this.cur.meta.term === m.meta.term &&
      this.cur.total === m.total;
    if (!same) {
      if (m.offset !== 0) return { holds: 0 }; // a transfer not held here (lost, or never begun)
      this.cur = { term: m.term, meta: m.meta, total: m.total, parts: [], received: 0 };
    }
    const cur = this.cur!;
    if (cur.received !== m.offset) return { holds: cur.received }; // a loss or a duplicate
    // A copy: a decoded chunk may be a view into a buffer the transport reuses.
    cur.parts.push(Buffer.from(m.chunk));
    cur.received += m.chunk.byteLength;
    if (cur.received < cur.total) return { holds: cur.received };
    this.cur = undefined;
    return { data: Buffer.concat(cur.parts, cur.total) };
  }

  /** Forget a partial transfer (a new term, leadership, or a log that no longer needs it). */
  clear(): void {
    this.cur = undefined;
  }

  /** Forget a partial transfer of a snapshot at or below `index` (the log has got that far). */
  clearUpTo(index: number): void {
    if (this.cur && this.cur.meta.index <= index) this.cur = undefined;
  }
}
