import type { DurableStore } from "../durable/store.ts";
import { encode } from "../runtime/codec.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { decodeEntry, type Entry, encodedEntry, type HardState, type Snapshot } from "./messages.ts";
import type { Ready } from "./raft-types.ts";

type Write = NonNullable<Ready["write"]>;

const HARD = "hard";
const SNAP = "snap";
/** A stored snapshot's `enc` mark: its data is the state machine's snapshot encoded with the codec. */
const SNAP_ENCODED = 1;
/** ...and that data is stored in chunks (`chunkKey`), not in the record. */
const SNAP_CHUNKED = 2;
const entryKey = (i: number) => `e/${i.toString().padStart(16, "0")}`;
const CHUNKS = "s/";
const chunkKey = (gen: number, i: number) =>
  `${CHUNKS}${gen.toString().padStart(10, "0")}/${i.toString().padStart(8, "0")}`;
/** The generation a chunk key names. */
const chunkGen = (key: string) => Number(key.slice(CHUNKS.length, key.indexOf("/", CHUNKS.length)));

interface StoredSnapshot {
  meta: Snapshot["meta"];
  enc?: number;
  /** enc SNAP_ENCODED: the bytes; no enc (older stores): the state itself. */
  data?: unknown;
  /** enc SNAP_CHUNKED: where the bytes are. */
  gen?: number;
  chunks?: number;
  bytes?: number;
}

export interface RaftStorageOptions {
  /** Stored entries a snapshot covers deleted per commit (default 4,096, ~6 ms of LMDB work). */
  staleDeletesPerCommit?: number;
  /** Bytes of snapshot per stored chunk, and so per commit when it is written in the background. */
  snapshotChunkBytes?: number;
}

function damaged(what: string): FaultlineError {
  return new FaultlineError(
    ErrorCode.BadStore,
    `${what}: the store is damaged. Nothing was changed; restore this member's data from a backup, or remove the member and add it back empty`,
  );
}

/**
 * How a Raft member's state lies in its durable store: the hard state, the log (one key per entry,
 * its encoding), and the last snapshot (a record pointing at chunks of its bytes). It turns the
 * core's writes into commit batches, and keeps what must not stop the member in one commit for
 * later, a slice per commit:
 *
 * - a snapshot the member took itself (compaction) is written chunk by chunk; its record is
 *   written last, in one commit with the switch from the previous one. Nothing waits for it: until
 *   then a restart starts from the previous snapshot and the log, all of which is still stored.
 *   (At 100,000 coordination revisions the 20 MB snapshot held its member's event loop ~300 ms in
 *   one commit — longer than a follower waits before it suspects its leader.)
 * - the entries a stored snapshot covers are deleted a slice per commit; until then they are
 *   ignored, also by a restart (the log starts after the snapshot).
 * - chunks of a snapshot that was never finished (a crash, or a snapshot from the leader that
 *   came first) are deleted the same way.
 *
 * A snapshot from the leader (an install) is written whole in the commit of its write, because
 * the member's answer waits for it.
 */
export class RaftStorage {
  private storedFirst = 0;
  private storedLast = 0;
  private staleFrom = 0;
  private staleTo = 0;
  /** Generation of the stored snapshot's chunks (0: none, or stored whole in its record). */
  private gen = 0;
  private genChunks = 0;
  private lastGen = 0;
  /** A snapshot of this member's being written, chunk by chunk. */
  private pending: { snapshot: Snapshot; gen: number; chunks: number; next: number } | undefined;
  /** Chunk keys of snapshots no record points at. */
  private orphans: string[] = [];
  private readonly staleSlice: number;
  private readonly chunkBytes: number;

  constructor(
    private readonly store: DurableStore,
    o: RaftStorageOptions = {},
  ) {
    this.staleSlice = o.staleDeletesPerCommit ?? 4096;
    this.chunkBytes = o.snapshotChunkBytes ?? 1024 * 1024;
  }

  /** What the store holds, at start. Throws FL_BAD_STORE on what does not decode or is missing. */
  load(): { hard: HardState; snapshot?: Snapshot; entries: Entry[] } {
    const data = this.store.load();
    const hard = (data.get(HARD) as HardState | undefined) ?? { term: 0, vote: null };
    const stored = data.get(SNAP) as StoredSnapshot | undefined;
    let snapshot: Snapshot | undefined;
    if (stored?.enc === SNAP_CHUNKED) {
      this.gen = stored.gen!;
      this.genChunks = stored.chunks!;
      const parts: Uint8Array[] = [];
      for (let i = 0; i < this.genChunks; i++) {
        const c = data.get(chunkKey(this.gen, i));
        if (!(c instanceof Uint8Array))
          throw damaged(`raft snapshot chunk ${chunkKey(this.gen, i)} is missing`);
        parts.push(c);
      }
      const bytes = Buffer.concat(parts);
      if (bytes.byteLength !== stored.bytes)
        throw damaged(`raft snapshot at ${stored.meta.index} is truncated`);
      snapshot = { meta: stored.meta, data: bytes };
    } else if (stored) {
      // A store written before snapshots were kept encoded (no `enc` mark) holds the state itself.
      snapshot = {
        meta: stored.meta,
        data: stored.enc === SNAP_ENCODED ? (stored.data as Uint8Array) : encode(stored.data),
      };
    }
    const entries: Entry[] = [];
    for (const [k, v] of data) {
      if (k.startsWith(CHUNKS)) {
        const gen = chunkGen(k);
        this.lastGen = Math.max(this.lastGen, gen);
        if (gen !== this.gen) this.orphans.push(k);
        continue;
      }
      if (!k.startsWith("e/")) continue;
      // Entries are stored encoded (stores written before that hold them as objects).
      const e = v instanceof Uint8Array ? decodeEntry(v) : (v as Entry);
      if (!e) throw damaged(`raft log entry ${k} in the durable store does not decode`);
      entries.push(e);
    }
    entries.sort((a, b) => a.index - b.index);
    const snapIndex = snapshot?.meta.index ?? 0;
    const live = entries.filter((e) => e.index > snapIndex);
    if (entries.length > live.length) {
      this.staleFrom = entries[0]!.index;
      this.staleTo = entries[entries.length - live.length - 1]!.index;
    }
    this.storedFirst = live[0]?.index ?? 0;
    this.storedLast = live.at(-1)?.index ?? 0;
    return { hard, ...(snapshot ? { snapshot } : {}), entries };
  }

  /** A snapshot of this member's own is being written (the next waits for it). */
  get writingSnapshot(): boolean {
    return this.pending !== undefined;
  }

  /** Work left for later commits. */
  get busy(): boolean {
    return this.pending !== undefined || this.staleFrom !== 0 || this.orphans.length > 0;
  }

  /**
   * Add one of the core's writes to `batch`. `own`: its snapshot is one this member took
   * (compaction), to be written in the background; otherwise it is written here, whole.
   */
  add(batch: Map<string, unknown>, w: Write, own: boolean): void {
    if (w.snapshot) {
      if (this.pending) {
        // Superseded before it was finished: its chunks go.
        for (let i = 0; i < this.pending.next; i++) this.orphans.push(chunkKey(this.pending.gen, i));
        this.pending = undefined;
      }
      const gen = ++this.lastGen;
      const chunks = Math.max(1, Math.ceil(w.snapshot.data.byteLength / this.chunkBytes));
      this.pending = { snapshot: w.snapshot, gen, chunks, next: 0 };
      if (!own) while (this.pending) this.nextChunk(batch);
    }
    for (const e of w.entries) {
      batch.set(entryKey(e.index), encodedEntry(e));
      if (!this.storedFirst) this.storedFirst = e.index;
      this.storedLast = Math.max(this.storedLast, e.index);
    }
    if (w.truncate) {
      for (let i = w.lastIndex + 1; i <= this.storedLast; i++) batch.set(entryKey(i), undefined);
      this.storedLast = Math.min(this.storedLast, w.lastIndex);
      if (this.storedLast < this.storedFirst) this.storedFirst = this.storedLast = 0;
    }
    if (w.hard) batch.set(HARD, w.hard);
  }

  /** Add the next slice of background work to `batch`. */
  background(batch: Map<string, unknown>): void {
    if (this.pending) this.nextChunk(batch);
    if (this.staleFrom) {
      const to = Math.min(this.staleTo, this.staleFrom + this.staleSlice - 1);
      for (let i = this.staleFrom; i <= to; i++) batch.set(entryKey(i), undefined);
      this.staleFrom = to < this.staleTo ? to + 1 : 0;
    }
    for (const k of this.orphans.splice(0, 64)) batch.set(k, undefined);
  }

  /** Write the pending snapshot's next chunk; after its last, its record, in the same batch. */
  private nextChunk(batch: Map<string, unknown>): void {
    const p = this.pending!;
    const { data, meta } = p.snapshot;
    batch.set(
      chunkKey(p.gen, p.next),
      data.subarray(p.next * this.chunkBytes, (p.next + 1) * this.chunkBytes),
    );
    if (++p.next < p.chunks) return;
    this.pending = undefined;
    batch.set(SNAP, { meta, enc: SNAP_CHUNKED, gen: p.gen, chunks: p.chunks, bytes: data.byteLength });
    for (let i = 0; i < this.genChunks; i++) this.orphans.push(chunkKey(this.gen, i));
    this.gen = p.gen;
    this.genChunks = p.chunks;
    // The entries it covers are stale from here on.
    const covered = Math.min(meta.index, this.storedLast);
    if (this.storedFirst && this.storedFirst <= covered) {
      if (!this.staleFrom) this.staleFrom = this.storedFirst;
      this.staleTo = covered;
    }
    if (this.storedFirst && this.storedFirst <= meta.index) this.storedFirst = meta.index + 1;
    if (this.storedLast < this.storedFirst) this.storedFirst = this.storedLast = 0;
  }
}
