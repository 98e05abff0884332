import type { NodeId } from "../net/transport.ts";
import { decode, encode } from "../runtime/codec.ts";

/** One log entry. `config` entries carry the voter set that takes effect when they are appended. */
export interface Entry {
  index: number;
  term: number;
  type: "normal" | "config" | "noop";
  data?: unknown;
}

/** What must be durable before a node votes or acknowledges: its term and its vote in that term. */
export interface HardState {
  term: number;
  vote: NodeId | null;
}

export interface SnapshotMeta {
  index: number;
  term: number;
  voters: NodeId[];
}

/**
 * The state machine up to `meta.index`, encoded by the host (`RaftCore.compact`): bytes, so that a
 * leader can send it in chunks that each fit in a frame, and a follower put it together again.
 */
export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/**
 * Raft's messages. `vote` is both the pre-vote (`pre`, which changes no state at the voter) and the
 * real vote. `down` is the quorum notification: the first node that learns for certain that the
 * leader is gone tells the others, so they all stop waiting for it at once.
 */
export type RaftMessage =
  | {
      p: "raft";
      t: "vote";
      term: number;
      pre: boolean;
      lastIndex: number;
      lastTerm: number;
      /** The candidate knows for certain that this leader (of `down.term`) is gone. */
      down?: { leader: NodeId; term: number };
    }
  | { p: "raft"; t: "vote-r"; term: number; pre: boolean; granted: boolean }
  | {
      p: "raft";
      t: "app";
      term: number;
      prevIndex: number;
      prevTerm: number;
      entries: Entry[];
      commit: number;
    }
  /** ok: `index` is the follower's last matching index; not ok: `reject` was the prevIndex, `hint` a retry point. */
  | { p: "raft"; t: "app-r"; term: number; ok: boolean; index: number; reject: number; hint: number }
  /**
   * Heartbeat: the commit index (never above what the follower is known to hold), the read round
   * it confirms, and the succession order (who should stand first if this leader dies).
   */
  | { p: "raft"; t: "hb"; term: number; commit: number; read: number; succ: NodeId[] }
  | { p: "raft"; t: "hb-r"; term: number; read: number }
  /**
   * One chunk of a snapshot (Raft §7's InstallSnapshot): bytes [offset, offset + chunk.length) of
   * `total`. The follower installs it once it holds all of them, in order, from one leader's term.
   */
  | {
      p: "raft";
      t: "snap";
      term: number;
      meta: SnapshotMeta;
      offset: number;
      total: number;
      chunk: Uint8Array;
    }
  /** A follower holds the first `offset` bytes of the snapshot at `index`: send the next chunk. */
  | { p: "raft"; t: "snap-r"; term: number; index: number; offset: number }
  | { p: "raft"; t: "down"; term: number; leader: NodeId };

/** A message is at most this many entries (a batch); the leader sends more as acks come back. */
export const MAX_ENTRIES_PER_MESSAGE = 1024;

const isId = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;
const isIndex = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const ENTRY_TYPES = new Set(["normal", "config", "noop"]);

function isEntry(e: unknown): e is Entry {
  if (typeof e !== "object" || e === null) return false;
  const x = e as Record<string, unknown>;
  if (!isIndex(x.index) || x.index === 0 || !isIndex(x.term) || !ENTRY_TYPES.has(x.type as string)) {
    return false;
  }
  return x.type !== "config" || isVoters((x.data as { voters?: unknown } | undefined)?.voters);
}

function isVoters(v: unknown): v is NodeId[] {
  return Array.isArray(v) && v.length > 0 && v.length <= 64 && v.every(isId) && new Set(v).size === v.length;
}

function isSnapshotMeta(m: unknown): m is SnapshotMeta {
  if (typeof m !== "object" || m === null) return false;
  const x = m as Record<string, unknown>;
  return isIndex(x.index) && isIndex(x.term) && isVoters(x.voters);
}

/**
 * About how many bytes `v` takes once encoded — never fewer (a string counts 3 bytes a UTF-16 unit,
 * the most UTF-8 needs): what keeps an append message under the frame limit without encoding it
 * twice. Plain objects, arrays and byte arrays are counted; anything else (a Map, a Date, a class
 * instance) is encoded to be measured.
 */
export function approxBytes(v: unknown): number {
  switch (typeof v) {
    case "string":
      return 5 + v.length * 3;
    case "number":
    case "bigint":
      return 9;
    case "boolean":
      return 1;
    case "undefined":
      return 3; // msgpackr writes undefined as a 3-byte extension
    case "object": {
      if (v === null) return 1;
      if (v instanceof Uint8Array) return 5 + v.byteLength;
      let n = 5;
      if (Array.isArray(v)) {
        for (const x of v) n += approxBytes(x);
        return n;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return encode(v).byteLength;
      // msgpackr may encode what toJSON() returns instead of the properties: count that exactly.
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") return encode(v).byteLength;
      // for-in, not Object.entries: no array a property (this runs for every proposal). It visits
      // every enumerable string key, own or inherited: at least what msgpackr encodes.
      const o = v as Record<string, unknown>;
      for (const k in o) n += 5 + k.length * 3 + approxBytes(o[k]);
      return n;
    }
    default:
      return encode(v).byteLength;
  }
}

/**
 * Whether `v` encodes to more than `max` bytes: the estimate first (it never falls short), the
 * encoding itself only when the estimate is over.
 */
export function encodesOver(v: unknown, max: number): boolean {
  return approxBytes(v) > max && encode(v).byteLength > max;
}

/** `approxBytes` of an entry, remembered (an entry is sent to every follower, and again after a loss). */
export function approxEntryBytes(e: Entry): number {
  let n = (e as Remembered)[APPROX];
  if (n === undefined) {
    n = 53 + approxBytes(e.data); // index, term (9 bytes each), type, the keys; 5: the wire's bin header
    remember(e, APPROX, n);
  }
  return n;
}

/** A frame's body that is a well-formed Raft message (anything else is dropped and counted). */
export function isRaftMessage(m: unknown): m is RaftMessage {
  if (typeof m !== "object" || m === null) return false;
  const x = m as Record<string, unknown>;
  if (x.p !== "raft" || !isIndex(x.term)) return false;
  switch (x.t) {
    case "vote":
      return (
        typeof x.pre === "boolean" &&
        isIndex(x.lastIndex) &&
        isIndex(x.lastTerm) &&
        (x.down === undefined ||
          (typeof x.down === "object" &&
            x.down !== null &&
            isId((x.down as Record<string, unknown>).leader) &&
            isIndex((x.down as Record<string, unknown>).term)))
      );
    case "vote-r":
      return typeof x.pre === "boolean" && typeof x.granted === "boolean";
    case "app": {
      if (!isIndex(x.prevIndex) || !isIndex(x.prevTerm) || !isIndex(x.commit)) return false;
      const es = x.entries;
      if (!Array.isArray(es) || es.length > MAX_ENTRIES_PER_MESSAGE || !es.every(isEntry)) return false;
      // Consecutive, starting right after prevIndex, terms never going down.
      return es.every(
        (e, i) =>
          e.index === (x.prevIndex as number) + 1 + i &&
          e.term >= (i === 0 ? (x.prevTerm as number) : es[i - 1]!.term) &&
          e.term <= (x.term as number),
      );
    }
    case "app-r":
      return typeof x.ok === "boolean" && isIndex(x.index) && isIndex(x.reject) && isIndex(x.hint);
    case "hb":
      return (
        isIndex(x.commit) &&
        isIndex(x.read) &&
        Array.isArray(x.succ) &&
        x.succ.length <= 64 &&
        x.succ.every(isId)
      );
    case "hb-r":
      return isIndex(x.read);
    case "snap":
      return (
        isSnapshotMeta(x.meta) &&
        isIndex(x.offset) &&
        isIndex(x.total) &&
        x.chunk instanceof Uint8Array &&
        x.chunk.byteLength > 0 && // an encoded snapshot is never empty
        (x.offset as number) + x.chunk.byteLength <= (x.total as number)
      );
    case "snap-r":
      return isIndex(x.index) && isIndex(x.offset);
    case "down":
      return isId(x.leader);
    default:
      return false;
  }
}

/**
 * What an entry remembers about itself (its encoding, its `approxEntryBytes`): non-enumerable
 * symbol properties, which the codec, spreads and structuredClone leave out. WeakMaps did the
 * same with more work for the GC: 100,000 puts through three members in one process took
 * 4.3–4.9 s with one, 3.4–3.6 s without, GC 830 against 650–710 ms.
 */
const BYTES = Symbol("faultline.entry-bytes");
const APPROX = Symbol("faultline.entry-approx-bytes");
type Remembered = Entry & { [BYTES]?: Uint8Array; [APPROX]?: number };

function remember(e: Entry, key: typeof BYTES | typeof APPROX, value: unknown): void {
  Object.defineProperty(e, key, { value });
}

/**
 * An entry's encoding, made once and kept with it: what an append carries (to every follower)
 * and what the log stores, so neither encodes the entry again. An entry is never changed once
 * made, so its bytes stay right.
 */
export function encodedEntry(e: Entry): Uint8Array {
  let b = (e as Remembered)[BYTES];
  if (b === undefined) {
    // A copy: what the codec returns is a view into its shared output buffer, which a kept view
    // would keep alive whole (and structuredClone would copy whole).
    b = Uint8Array.prototype.slice.call(encode(e));
    remember(e, BYTES, b);
  }
  return b;
}

/** An entry from its encoding, the bytes kept with it; undefined if they are not an entry. */
export function decodeEntry(b: Uint8Array): Entry | undefined {
  let e: unknown;
  try {
    e = decode(b);
  } catch {
    return undefined;
  }
  if (!isEntry(e)) return undefined;
  // Kept as a copy of its own: `b` is usually a view into a whole frame or socket read.
  remember(e, BYTES, Uint8Array.prototype.slice.call(b));
  return e;
}

/** A message as it goes on the wire: an append's entries as their encodings. */
export function toWire(m: RaftMessage): unknown {
  return m.t === "app" && m.entries.length ? { ...m, entries: m.entries.map(encodedEntry) } : m;
}

/**
 * A message from the wire as the core takes it: an append's encoded entries decoded (entries sent
 * as objects, by a member from before entries travelled encoded, pass as they are). Undefined if
 * an encoding is not an entry; the message is then malformed.
 */
export function fromWire(m: unknown): unknown {
  const x = m as { t?: unknown; entries?: unknown };
  if (x.t !== "app" || !Array.isArray(x.entries) || x.entries.length > MAX_ENTRIES_PER_MESSAGE) return m;
  if (!x.entries.some((e) => e instanceof Uint8Array)) return m;
  const entries: Entry[] = [];
  for (const b of x.entries) {
    const e = b instanceof Uint8Array ? decodeEntry(b) : undefined;
    if (!e) return undefined;
    entries.push(e);
  }
  return { ...x, entries };
}
