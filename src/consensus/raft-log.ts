import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { approxEntryBytes, type Entry, type SnapshotMeta } from "./messages.ts";

/**
 * A node's log in memory: a compacted prefix (summarised by the snapshot's index and term)
 * followed by the entries after it. Indexes start at 1; index 0, term 0 is the empty log.
 */
export class RaftLog {
  private snapIndex = 0;
  private snapTerm = 0;
  private entries: Entry[] = [];

  constructor(snapshot?: SnapshotMeta, entries: readonly Entry[] = []) {
    if (snapshot) {
      this.snapIndex = snapshot.index;
      this.snapTerm = snapshot.term;
    }
    for (const e of entries) {
      if (e.index <= this.snapIndex) continue;
      if (e.index !== this.lastIndex() + 1) {
        throw new FaultlineError(
          ErrorCode.BadStore,
          `raft log: entry ${e.index} follows ${this.lastIndex()}; the stored log has a gap — restore this member from a snapshot of another`,
        );
      }
      this.entries.push(e);
    }
  }

  get firstIndex(): number {
    return this.snapIndex + 1;
  }

  get snapshotIndex(): number {
    return this.snapIndex;
  }

  get snapshotTerm(): number {
    return this.snapTerm;
  }

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length ? this.entries[this.entries.length - 1]!.term : this.snapTerm;
  }

  /** The term at `index`, or undefined when it is compacted away (below the snapshot) or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1]!.term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1];
  }

  /**
   * Entries [from, to] (inclusive), at most `max` of them and, past the first, at most `maxBytes`
   * by `approxEntryBytes`; `from` must be above the snapshot.
   */
  slice(
    from: number,
    to: number,
    max = Number.POSITIVE_INFINITY,
    maxBytes = Number.POSITIVE_INFINITY,
  ): Entry[] {
    const lo = Math.max(from, this.firstIndex);
    let hi = Math.min(to, this.lastIndex(), lo + max - 1);
    if (hi < lo) return [];
    if (maxBytes !== Number.POSITIVE_INFINITY) {
      let bytes = approxEntryBytes(this.entries[lo - this.snapIndex - 1]!);
      for (let i = lo + 1; i <= hi; i++) {
        bytes += approxEntryBytes(this.entries[i - this.snapIndex - 1]!);
        if (bytes > maxBytes) {
          hi = i - 1;
          break;
        }
      }
    }
    return this.entries.slice(lo - this.snapIndex - 1, hi - this.snapIndex);
  }

  /** Is a log ending at (lastTerm, lastIndex) at least as up to date as this one (Raft §5.4.1)? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const t = this.lastTerm();
    return lastTerm > t || (lastTerm === t && lastIndex >= this.lastIndex());
  }

  /** Append at the end (the leader's own proposals). */
  push(e: Entry): void {
    this.entries.push(e);
  }

  /**
   * Merge entries that follow a matching `prevIndex` (a follower receiving an append): entries
   * already present with the same term are kept; from the first conflict on, the log is replaced.
   * Returns the entries that were actually written (to persist) and where truncation started, if it did.
   */
  merge(entries: readonly Entry[]): { written: Entry[]; truncatedFrom?: number } {
    let i = 0;
    for (; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.index <= this.snapIndex) continue; // covered by the snapshot: committed, so identical
      const t = this.term(e.index);
      if (t === undefined) break;
      if (t !== e.term) {
        this.entries.length = e.index - this.snapIndex - 1;
        const written = entries.slice(i);
        this.entries.push(...written);
        return { written, truncatedFrom: e.index };
      }
    }
    const written = entries.slice(i);
    this.entries.push(...written);
    return { written };
  }

  /** Forget everything up to `index` (now in a snapshot); entries after it stay. */
  compactTo(index: number, term: number): void {
    if (index <= this.snapIndex) return;
    const keep =
      index < this.lastIndex() && this.term(index) === term ? this.entries.slice(index - this.snapIndex) : [];
    this.entries = keep;
    this.snapIndex = index;
    this.snapTerm = term;
  }
}
