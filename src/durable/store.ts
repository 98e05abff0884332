import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { open, type RootDatabase } from "lmdb";
import { copyValue } from "../runtime/clone.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import type { MemoryStore } from "../sim/memory-store.ts";

/**
 * Where a durable process keeps its state, its outbox and what it has received: a key-value
 * image that is read whole at start and changed by atomic batches.
 */
export interface DurableStore {
  /** Everything stored, at start. */
  load(): Map<string, unknown>;
  /**
   * Apply `writes` (a value of `undefined` deletes the key) atomically; with `sync` durability
   * the batch is on disk when this returns. Throws if it cannot: the caller must stop.
   */
  commit(writes: ReadonlyMap<string, unknown>): void;
  /**
   * `commit` without blocking the event loop on the disk: resolves once the batch is as durable
   * as `commit` would have made it; rejects if it cannot be (the caller must stop). Batches
   * complete in the order they were given. Stores that cannot do better leave it out.
   */
  commitAsync?(writes: ReadonlyMap<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

/** `sync`: every commit is on disk before anything it produced leaves. `memory`: tests only. */
export type Durability = "sync" | "memory";

/** Durability `memory`: a Map in this process. A crash loses everything (tests and benches). */
export class VolatileStore implements DurableStore {
  private readonly data = new Map<string, unknown>();
  load(): Map<string, unknown> {
    return new Map([...this.data].map(([k, v]) => [k, copyValue(v)]));
  }
  commit(writes: ReadonlyMap<string, unknown>): void {
    for (const [k, v] of writes) {
      if (v === undefined) this.data.delete(k);
      else this.data.set(k, copyValue(v));
    }
  }
  async close(): Promise<void> {}
}

/** A simulated node's stable storage (survives its crashes) as a durable store. */
export class SimDurableStore implements DurableStore {
  constructor(
    private readonly disk: MemoryStore,
    private readonly prefix = "ken/",
  ) {}
  load(): Map<string, unknown> {
    const out = new Map<string, unknown>();
    for (const k of this.disk.keys(this.prefix)) out.set(k.slice(this.prefix.length), this.disk.get(k));
    return out;
  }
  commit(writes: ReadonlyMap<string, unknown>): void {
    for (const [k, v] of writes) {
      if (v === undefined) this.disk.delete(this.prefix + k);
      else this.disk.put(this.prefix + k, v);
    }
  }
  async close(): Promise<void> {}
}

/** The marker a faultline store directory carries, written when the store is created. */
const MARKER = "faultline-store.json";
const DATA = "data.mdb";
const LMDB_MAGIC = 0xbeefc0de;
const P_META = 0x08;

/**
 * A durable store in an LMDB environment (one directory per process). Every commit is one LMDB
 * write transaction, synced to disk before `commit` returns.
 *
 * LMDB (through lmdb-js) crashes the whole process (SIGSEGV) when it opens a damaged file, so the
 * file is checked first: both meta pages must carry LMDB's magic and the newest one's last page
 * must lie inside the file. A directory that once held a store but has lost its data file is an
 * error too, never a silent reset to empty.
 */
export class LmdbStore implements DurableStore {
  private readonly env: RootDatabase;
  /** commitAsync transactions not yet done; close() waits for them. */
  private readonly inflight = new Set<Promise<void>>();
  private closing = false;

  private constructor(
    readonly dir: string,
    private readonly durability: Durability,
  ) {
    this.env = open({ path: dir, noSync: durability !== "sync" });
  }

  static open(dir: string, durability: Durability = "sync"): LmdbStore {
    const fresh = checkStoreDir(dir);
    const store = new LmdbStore(dir, durability);
    // The marker only once LMDB's file exists and is on disk: a process killed in between leaves
    // a data file without a marker (adopted after a check, like any LMDB file), never a marker
    // without a data file, which reads as a store that lost its data.
    if (fresh) {
      try {
        writeMarker(dir);
      } catch (e) {
        store.env.close().catch(() => {}); // the marker's error is the one to report
        throw e;
      }
    }
    return store;
  }

  load(): Map<string, unknown> {
    const out = new Map<string, unknown>();
    for (const { key, value } of this.env.getRange({})) out.set(String(key), value);
    return out;
  }

  commit(writes: ReadonlyMap<string, unknown>): void {
    // A block body: an arrow that returned the put's promise would make lmdb-js defer the commit.
    this.env.transactionSync(() => {
      for (const [k, v] of writes) {
        if (v === undefined) this.env.removeSync(k);
        else this.env.putSync(k, v);
      }
    });
  }

  /**
   * One LMDB transaction, run by lmdb-js's write thread: the event loop goes on while the commit
   * and its fdatasync take place (lmdb-js's overlapping sync flushes a commit after its write
   * lock is released). lmdb-js runs transactions in the order they were queued, so a crash keeps a
   * prefix of the batches, each whole.
   */
  async commitAsync(writes: ReadonlyMap<string, unknown>): Promise<void> {
    if (this.closing) {
      throw new FaultlineError(ErrorCode.Stopped, `durable store ${this.dir} is closed: nothing was written`);
    }
    const done = (async () => {
      await this.env.transaction(() => {
        for (const [k, v] of writes) {
          if (v === undefined) void this.env.remove(k);
          else void this.env.put(k, v);
        }
      });
      if (this.durability === "sync") await this.env.flushed;
    })();
    this.inflight.add(done);
    try {
      await done;
    } finally {
      this.inflight.delete(done);
    }
  }

  /**
   * Close once the transactions already handed to the write thread are done: lmdb-js runs a
   * queued transaction's callback later, and one that ran after the environment closed threw
   * ("Database is closed") where nobody could catch it.
   */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.inflight]);
    await this.env.close();
  }
}

function bad(dir: string, file: string, what: string): FaultlineError {
  return new FaultlineError(
    ErrorCode.BadStore,
    `durable store ${join(dir, file)}: ${what}. Nothing was changed. Restore the directory from a backup, ` +
      "or, to start this process over with empty state (its state and unacknowledged messages are lost), " +
      `move ${dir} aside.`,
  );
}

/**
 * Check a store directory before LMDB opens it (see LmdbStore). True when it has no marker yet: a
 * new store (or an LMDB file faultline has not adopted yet), whose marker `writeMarker` writes
 * once LMDB has created its file.
 */
export function checkStoreDir(dir: string): boolean {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw bad(dir, "", "is not a directory");
  const marker = join(dir, MARKER);
  const data = join(dir, DATA);
  if (!existsSync(marker)) {
    if (existsSync(data) && statSync(data).size > 0) {
      // An LMDB file without a marker (not created by faultline, or a creation cut short after
      // LMDB wrote it): check it all the same, then adopt it.
      checkLmdbFile(dir);
    }
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true });
      syncPath(dirname(dir)); // the new directory's entry survives a power loss too
    }
    return true;
  }
  if (!existsSync(data)) throw bad(dir, DATA, "is missing, but this directory holds a store");
  if (statSync(data).size === 0) throw bad(dir, DATA, "is empty (truncated to nothing)");
  checkLmdbFile(dir);
  return false;
}

/**
 * Mark `dir` as a faultline store: sync LMDB's file and the directory entry first, then write the
 * marker through a temporary file and a rename, so that after a crash at any point the marker
 * is either absent or whole, and present only beside a data file on disk.
 */
export function writeMarker(dir: string): void {
  syncPath(join(dir, DATA));
  syncPath(dir);
  const tmp = join(dir, `${MARKER}.tmp`);
  writeFileSync(tmp, `${JSON.stringify({ format: 1, created: new Date().toISOString() })}\n`);
  syncPath(tmp);
  renameSync(tmp, join(dir, MARKER));
  syncPath(dir);
}

/** fsync a file or a directory (its entries). */
function syncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function checkLmdbFile(dir: string): void {
  const path = join(dir, DATA);
  const size = statSync(path).size;
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(4096 + 256);
    const n = readSync(fd, head, 0, head.length, 0);
    const meta = (offset: number) => {
      if (offset + 0xa0 > n) return undefined;
      if ((head.readUInt16LE(offset + 0x12) & P_META) === 0) return undefined;
      if (head.readUInt32LE(offset + 0x18) !== LMDB_MAGIC) return undefined;
      const pageSize = head.readUInt32LE(offset + 0x30);
      if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return undefined;
      return {
        pageSize,
        lastPage: Number(head.readBigUInt64LE(offset + 0x90)),
        txn: Number(head.readBigUInt64LE(offset + 0x98)),
      };
    };
    const m0 = meta(0);
    if (!m0) throw bad(dir, DATA, "is not an LMDB file (no valid meta page): garbage or another format");
    const m1 = meta(m0.pageSize);
    if (!m1 || m1.pageSize !== m0.pageSize) throw bad(dir, DATA, "has a damaged second meta page");
    if (size % m0.pageSize !== 0 || size < 2 * m0.pageSize)
      throw bad(dir, DATA, `is truncated (${size} bytes is not a whole number of ${m0.pageSize}-byte pages)`);
    const newest = m0.txn >= m1.txn ? m0 : m1;
    if ((newest.lastPage + 1) * m0.pageSize > size) {
      throw bad(
        dir,
        DATA,
        `is truncated: its last transaction uses ${(newest.lastPage + 1) * m0.pageSize} bytes, the file has ${size}`,
      );
    }
  } finally {
    closeSync(fd);
  }
}
