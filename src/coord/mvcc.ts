import type { SnapshotWriter } from "../consensus/raft-node.ts";
import { encode } from "../runtime/codec.ts";
import type {
  Applied,
  Bytes,
  Command,
  Compare,
  CoordError,
  DeleteRangeRequest,
  KeyValue,
  PutRequest,
  RangeRequest,
  RangeResponse,
  RequestOp,
  ResponseOp,
  TxnRequest,
  TxnResponse,
  WatchEvent,
} from "./types.ts";
import { Errors } from "./types.ts";

/** One version of a key; `deleted` marks a tombstone (the key did not exist from `mod` on). */
interface Version {
  kv: KeyValue;
  deleted: boolean;
  /** Its place among the writes of its revision (a transaction writes several keys at one revision). */
  sub: number;
}

export interface Lease {
  id: number;
  ttl: number;
  /** Who holds it (a faultline process or node): its certain exit revokes the lease at once. */
  owner?: string;
  keys: Set<Bytes>;
}

/** What a snapshot of the store holds (plain data: msgpack and structuredClone carry it). */
export interface MvccImage {
  revision: number;
  compacted: number;
  versions: Array<[Bytes, Version[]]>;
  leases: Array<{ id: number; ttl: number; owner?: string; keys: Bytes[] }>;
}

/** Everything `range_end` may mean, as etcd reads it. */
function inRange(key: Bytes, start: Bytes, end: Bytes | undefined): boolean {
  if (!end) return key === start;
  if (end === "\u0000") return key >= start;
  return key >= start && key < end;
}

/**
 * The coordination service's state machine: a multi-version key-value store with etcd's
 * semantics — a store revision that every write (a put, a delete, a transaction) moves by one;
 * per key its create and mod revisions and version; ranges at the current or an older revision
 * (down to the compacted one); transactions with compares; leases whose revocation deletes their
 * keys. Deterministic: every member applies the same commands to the same result, and each
 * write yields the watch events it caused.
 */
export class MvccStore {
  revision = 1;
  compacted = 0;
  /** Every key ever written (since compaction), in byte order, with its versions oldest first. */
  private readonly keys: Bytes[] = [];
  private readonly versions = new Map<Bytes, Version[]>();
  readonly leases = new Map<number, Lease>();
  /** Bytes of the last snapshot written (the next one's buffer is sized from it). */
  private lastSnapshotBytes = 0;
  /** Called with the events of each write, in revision order. */
  onEvents: ((revision: number, events: WatchEvent[]) => void) | undefined;

  // ---- reads --------------------------------------------------------------------------------

  range(r: RangeRequest): Applied<RangeResponse> {
    const rev = r.revision && r.revision > 0 ? r.revision : this.revision;
    if (rev > this.revision) return fail(Errors.future);
    if (rev < this.compacted) return fail(Errors.compacted);
    let kvs: KeyValue[] = [];
    for (const k of this.keysIn(r.key, r.range_end)) {
      const v = this.at(k, rev);
      if (!v) continue;
      const kv = v.kv;
      if (r.min_mod_revision && kv.mod_revision < r.min_mod_revision) continue;
      if (r.max_mod_revision && kv.mod_revision > r.max_mod_revision) continue;
      if (r.min_create_revision && kv.create_revision < r.min_create_revision) continue;
      if (r.max_create_revision && kv.create_revision > r.max_create_revision) continue;
      kvs.push(kv);
    }
    const count = kvs.length;
    if (r.sort_order || r.sort_target) {
      const target = r.sort_target ?? 0;
      const val = (kv: KeyValue): number | string =>
        [kv.key, kv.version, kv.create_revision, kv.mod_revision, kv.value][target] ?? kv.key;
      const dir = r.sort_order === 2 ? -1 : 1;
      kvs = [...kvs].sort((a, b) => {
        const x = val(a);
        const y = val(b);
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
    }
    let more = false;
    if (r.limit && r.limit > 0 && kvs.length > r.limit) {
      kvs = kvs.slice(0, r.limit);
      more = true;
    }
    if (r.count_only) kvs = [];
    else if (r.keys_only) kvs = kvs.map((kv) => ({ ...kv, value: "" }));
    return { ok: true, revision: this.revision, value: { kvs, more, count } };
  }

  get(key: Bytes): KeyValue | undefined {
    return this.at(key, this.revision)?.kv;
  }

  /** The write events after revision `from - 1` (from ≥ compacted), for a watch that starts there. */
  eventsSince(from: number, key: Bytes, end: Bytes | undefined, prevKv: boolean): WatchEvent[] | CoordError {
    if (from < this.compacted) return Errors.compacted;
    const out: Array<{ rev: number; sub: number; e: WatchEvent }> = [];
    for (const k of this.keysIn(key, end)) {
      const vs = this.versions.get(k)!;
      vs.forEach((v, i) => {
        if (v.kv.mod_revision < from) return;
        const prev = i > 0 && !vs[i - 1]!.deleted ? vs[i - 1]!.kv : undefined;
        const e: WatchEvent = v.deleted
          ? { type: "delete", kv: v.kv, ...(prevKv && prev ? { prev_kv: prev } : {}) }
          : { type: "put", kv: v.kv, ...(prevKv && prev ? { prev_kv: prev } : {}) };
        out.push({ rev: v.kv.mod_revision, sub: v.sub, e });
      });
    }
    out.sort((a, b) => a.rev - b.rev || a.sub - b.sub);
    return out.map((x) => x.e);
  }

  // ---- writes -------------------------------------------------------------------------------

  apply(cmd: Command): Applied<unknown> {
    switch (cmd.c) {
      case "put": {
        const e = this.check({ request_put: cmd.req });
        return e ? fail(e) : this.write((w) => w.put(cmd.req));
      }
      case "del":
        return this.write((w) => w.del(cmd.req));
      case "txn":
        return this.txn(cmd.req);
      case "compact":
        return this.compact(cmd.revision);
      case "lease-grant": {
        if (this.leases.has(cmd.id)) return fail(Errors.leaseExists);
        this.leases.set(cmd.id, {
          id: cmd.id,
          ttl: cmd.ttl,
          ...(cmd.owner ? { owner: cmd.owner } : {}),
          keys: new Set(),
        });
        return { ok: true, revision: this.revision, value: { id: cmd.id, ttl: cmd.ttl } };
      }
      case "lease-revoke": {
        const l = this.leases.get(cmd.id);
        if (!l) return fail(Errors.leaseNotFound);
        const keys = [...l.keys].sort();
        const r = this.write((w) => {
          for (const k of keys) w.del({ key: k });
          return {};
        });
        this.leases.delete(cmd.id);
        return r;
      }
    }
  }

  private txn(req: TxnRequest): Applied<TxnResponse> {
    const succeeded = req.compare.every((c) => this.compare(c));
    const ops = succeeded ? req.success : req.failure;
    const dup = duplicateWrite(ops);
    if (dup) return fail(Errors.duplicateKey);
    for (const op of ops) {
      const e = this.check(op);
      if (e) return fail(e);
    }
    return this.write((w) => ({ succeeded, responses: ops.map((op) => this.op(w, op)) }));
  }

  /** Check what would make an op fail, before anything is written (a txn is all or nothing). */
  private check(op: RequestOp): CoordError | undefined {
    if (op.request_put) {
      const p = op.request_put;
      if (!p.key) return Errors.emptyKey;
      if ((p.ignore_value || p.ignore_lease) && !this.get(p.key)) return Errors.keyNotFound;
      if (p.lease && !this.leases.has(p.lease)) return Errors.leaseNotFound;
    }
    if (op.request_range) {
      const r = op.request_range;
      if (r.revision && r.revision > this.revision) return Errors.future;
      if (r.revision && r.revision > 0 && r.revision < this.compacted) return Errors.compacted;
    }
    if (op.request_txn) {
      const t = op.request_txn;
      const ops = t.compare.every((c) => this.compare(c)) ? t.success : t.failure;
      for (const o of ops) {
        const e = this.check(o);
        if (e) return e;
      }
    }
    return undefined;
  }

  private op(w: Writer, op: RequestOp): ResponseOp {
    if (op.request_range) {
      const r = this.range({
        ...op.request_range,
        ...(op.request_range.revision ? {} : { revision: this.revision }),
      });
      return { response_range: r.ok ? r.value : { kvs: [], more: false, count: 0 } };
    }
    if (op.request_put) return { response_put: w.put(op.request_put) };
    if (op.request_delete_range) return { response_delete_range: w.del(op.request_delete_range) };
    const t = op.request_txn!;
    const succeeded = t.compare.every((c) => this.compare(c));
    return {
      response_txn: { succeeded, responses: (succeeded ? t.success : t.failure).map((o) => this.op(w, o)) },
    };
  }

  private compare(c: Compare): boolean {
    const keys = c.range_end ? [...this.keysIn(c.key, c.range_end)].filter((k) => this.get(k)) : [c.key];
    return keys.every((k) => {
      const kv = this.get(k);
      const target = c.target;
      const have: number | string =
        target === 0
          ? (kv?.version ?? 0)
          : target === 1
            ? (kv?.create_revision ?? 0)
            : target === 2
              ? (kv?.mod_revision ?? 0)
              : target === 3
                ? (kv?.value ?? "")
                : (kv?.lease ?? 0);
      if (target === 3 && !kv) return false; // etcd: a value compare on a missing key is false
      const want = [c.version ?? 0, c.create_revision ?? 0, c.mod_revision ?? 0, c.value ?? "", c.lease ?? 0][
        target
      ]!;
      switch (c.result) {
        case 0:
          return have === want;
        case 1:
          return have > want;
        case 2:
          return have < want;
        default:
          return have !== want;
      }
    });
  }

  private compact(rev: number): Applied<unknown> {
    if (rev > this.revision) return fail(Errors.future);
    if (rev <= this.compacted) return fail(Errors.compacted);
    this.compacted = rev;
    for (const [k, vs] of this.versions) {
      // Keep the newest version at or below rev (what a read at rev sees) and everything after.
      let keepFrom = 0;
      for (let i = 0; i < vs.length; i++) if (vs[i]!.kv.mod_revision <= rev) keepFrom = i;
      const kept = vs.slice(keepFrom);
      if (kept.length === 1 && kept[0]!.deleted && kept[0]!.kv.mod_revision <= rev) this.versions.delete(k);
      else this.versions.set(k, kept);
    }
    for (let i = this.keys.length - 1; i >= 0; i--)
      if (!this.versions.has(this.keys[i]!)) this.keys.splice(i, 1);
    return { ok: true, revision: this.revision, value: {} };
  }

  /** Run writes at the next revision; the revision moves only if something was written. */
  private write<T>(fn: (w: Writer) => T): Applied<T> {
    const w = new Writer(this, this.revision + 1);
    const value = fn(w);
    if (w.events.length) {
      this.revision += 1;
      this.onEvents?.(this.revision, w.events);
    }
    return { ok: true, revision: this.revision, value };
  }

  // ---- internals used by the writer ---------------------------------------------------------

  /** @internal */
  record(key: Bytes, v: Omit<Version, "sub">, sub: number): void {
    let vs = this.versions.get(key);
    if (!vs) {
      vs = [];
      this.versions.set(key, vs);
      this.keys.splice(lowerBound(this.keys, key), 0, key);
    }
    vs.push({ ...v, sub });
  }

  /** The live version of `key` at `rev`, if it existed then. */
  private at(key: Bytes, rev: number): Version | undefined {
    const vs = this.versions.get(key);
    if (!vs) return undefined;
    for (let i = vs.length - 1; i >= 0; i--) {
      if (vs[i]!.kv.mod_revision <= rev) return vs[i]!.deleted ? undefined : vs[i];
    }
    return undefined;
  }

  /** @internal Keys in [start, end) (etcd's reading of range_end), in byte order. */
  *keysIn(start: Bytes, end: Bytes | undefined): Generator<Bytes> {
    if (!end) {
      if (this.versions.has(start)) yield start;
      return;
    }
    for (let i = lowerBound(this.keys, start); i < this.keys.length; i++) {
      const k = this.keys[i]!;
      if (!inRange(k, start, end)) return;
      yield k;
    }
  }

  // ---- snapshots ----------------------------------------------------------------------------

  /**
   * The whole state, for a snapshot. It shares the store's own objects (copying them cost as much
   * as encoding them: 70 ms at 50,000 revisions): encode it before the store changes, as RaftNode does.
   */
  image(): MvccImage {
    return {
      revision: this.revision,
      compacted: this.compacted,
      versions: this.keys.map((k) => [k, this.versions.get(k)!]),
      leases: this.leaseImage(),
    };
  }

  private leaseImage(): MvccImage["leases"] {
    return [...this.leases.values()].map((l) => ({
      id: l.id,
      ttl: l.ttl,
      ...(l.owner ? { owner: l.owner } : {}),
      keys: [...l.keys],
    }));
  }

  /**
   * The state of this moment, encoded as `encode(image())` would encode it (msgpack, the same
   * decoded value), a slice of keys per step while the store goes on changing. Recorded versions
   * are never changed (a write appends to its key's array; compaction makes new arrays), so each
   * key's array and its length now are the moment, whatever is applied next. Encoding 100,000
   * revisions at once took ~180 ms of one event-loop turn — longer than a follower waits before it
   * suspects its leader.
   */
  snapshotWriter(versionsPerStep = 2_000): SnapshotWriter {
    const keys = this.keys.slice();
    const arrays = keys.map((k) => this.versions.get(k)!);
    const lengths = arrays.map((vs) => vs.length);
    const leases = this.leaseImage();
    const n = keys.length;
    // The bytes go into one buffer as they are made, sized from the last snapshot: joining 20 MB
    // of parts at the end was one more long turn (~150 ms on a busy member).
    let out = Buffer.allocUnsafe(Math.max(1 << 20, Math.ceil(this.lastSnapshotBytes * 1.25)));
    let used = 0;
    const put = (bytes: Uint8Array) => {
      if (used + bytes.byteLength > out.byteLength) {
        const grown = Buffer.allocUnsafe(Math.max(2 * out.byteLength, used + bytes.byteLength));
        out.copy(grown, 0, 0, used);
        out = grown;
      }
      out.set(bytes, used);
      used += bytes.byteLength;
    };
    put(Uint8Array.of(0x84)); // a map of 4 entries, as image() gives
    for (const [k, v] of [
      ["revision", this.revision],
      ["compacted", this.compacted],
      ["leases", leases],
    ] as const) {
      put(encode(k));
      put(encode(v));
    }
    put(encode("versions"));
    put(Uint8Array.of(0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)); // array32 of [key, versions]
    let next = 0;
    return {
      step: () => {
        const batch: Array<[Bytes, Version[]]> = [];
        for (let taken = 0; next < n && taken < versionsPerStep; next++) {
          const vs = arrays[next]!;
          const len = lengths[next]!;
          batch.push([keys[next]!, vs.length === len ? vs : vs.slice(0, len)]);
          taken += len;
        }
        if (batch.length > 0) {
          // The batch's own array header goes; its elements follow the one written above.
          const bytes = encode(batch);
          const h = bytes[0]! === 0xdd ? 5 : bytes[0]! === 0xdc ? 3 : 1;
          put(bytes.subarray(h));
        }
        if (next < n) return undefined;
        this.lastSnapshotBytes = used;
        return out.subarray(0, used);
      },
    };
  }

  restore(img: MvccImage | undefined): void {
    this.keys.length = 0;
    this.versions.clear();
    this.leases.clear();
    this.revision = img?.revision ?? 1;
    this.compacted = img?.compacted ?? 0;
    for (const [k, vs] of img?.versions ?? []) {
      this.keys.push(k);
      this.versions.set(k, vs);
    }
    for (const l of img?.leases ?? []) this.leases.set(l.id, { ...l, keys: new Set(l.keys) });
  }
}

/** The writes of one revision (a put, a delete range, or a whole transaction). */
class Writer {
  readonly events: WatchEvent[] = [];
  constructor(
    private readonly s: MvccStore,
    readonly rev: number,
  ) {}

  put(p: PutRequest): { prev_kv?: KeyValue } {
    const prev = this.s.get(p.key);
    const lease = p.ignore_lease ? (prev?.lease ?? 0) : (p.lease ?? 0);
    const kv: KeyValue = {
      key: p.key,
      create_revision: prev ? prev.create_revision : this.rev,
      mod_revision: this.rev,
      version: (prev?.version ?? 0) + 1,
      value: p.ignore_value ? (prev?.value ?? "") : p.value,
      lease,
    };
    if (prev?.lease && prev.lease !== lease) this.s.leases.get(prev.lease)?.keys.delete(p.key);
    if (lease) this.s.leases.get(lease)?.keys.add(p.key);
    this.s.record(p.key, { kv, deleted: false }, this.events.length);
    this.events.push({ type: "put", kv, ...(prev ? { prev_kv: prev } : {}) });
    return p.prev_kv && prev ? { prev_kv: prev } : {};
  }

  del(d: DeleteRangeRequest): { deleted: number; prev_kvs: KeyValue[] } {
    const prevs: KeyValue[] = [];
    for (const k of [...this.s.keysIn(d.key, d.range_end)]) {
      const prev = this.s.get(k);
      if (!prev) continue;
      prevs.push(prev);
      if (prev.lease) this.s.leases.get(prev.lease)?.keys.delete(k);
      const kv: KeyValue = {
        key: k,
        create_revision: 0,
        mod_revision: this.rev,
        version: 0,
        value: "",
        lease: 0,
      };
      this.s.record(k, { kv, deleted: true }, this.events.length);
      this.events.push({ type: "delete", kv, prev_kv: prev });
    }
    return { deleted: prevs.length, prev_kvs: d.prev_kv ? prevs : [] };
  }
}

function fail(error: CoordError): { ok: false; error: CoordError } {
  return { ok: false, error };
}

function lowerBound(a: readonly string[], x: string): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** etcd refuses a transaction branch that writes one key twice. */
function duplicateWrite(ops: readonly RequestOp[]): boolean {
  const seen = new Set<string>();
  for (const op of ops) {
    const k =
      op.request_put?.key ??
      (op.request_delete_range && !op.request_delete_range.range_end
        ? op.request_delete_range.key
        : undefined);
    if (k === undefined) continue;
    if (seen.has(k)) return true;
    seen.add(k);
  }
  return false;
}
