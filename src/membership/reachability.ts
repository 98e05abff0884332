import type { NodeId } from "../net/transport.ts";

/**
 * One row of the reachability matrix: the live members its owner cannot reach directly (its probes
 * of them were answered, ROW_AFTER times in a row, only through a relay), as of version `v` of the
 * owner's life `b`. A member nothing answers for is a suspicion, SWIM's business, not a path's.
 * Rows travel piggybacked on SWIM's messages like membership updates, and whole in its push-pull
 * exchanges, so every member holds every row: anyone can say which paths are broken, not only the
 * two ends of a path.
 */
export interface ReachRow {
  /** The owner: the member whose probes this row reports. */
  o: NodeId;
  /** The owner's life (its boot id), when it has one: a restarted member starts a new row. */
  b?: string;
  /** Bumped on every change of the row within one life. */
  v: number;
  /** Members the owner cannot reach directly, sorted. */
  u: NodeId[];
}

/** A row names at most this many members; more than this unreachable is a partition anyway. */
export const MAX_ROW = 256;
/** Rows accepted in one message (a push-pull exchange carries every non-empty row). */
export const MAX_ROWS_PER_MESSAGE = 4096;
/** Names carried by the rows of one push-pull exchange at most (keeps the frame well under 1 MB). */
export const MAX_STATE_IDS = 8192;
/** How often an owner renews a row that lists anything (ms); rows live three times as long. */
export const RENEW_MS = 30_000;
/** Probes in a row answered only through a relay before a member goes into the owner's row. */
export const ROW_AFTER = 3;

const isId = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;

/** Whether a value is a well-formed row (every field checked: rows arrive from the network). */
export function isReachRow(r: unknown): r is ReachRow {
  if (typeof r !== "object" || r === null) return false;
  const x = r as ReachRow;
  if (!isId(x.o) || !Number.isSafeInteger(x.v) || x.v < 0) return false;
  if (x.b !== undefined && !(typeof x.b === "string" && x.b.length > 0 && x.b.length <= 64)) return false;
  if (!Array.isArray(x.u) || x.u.length > MAX_ROW || !x.u.every(isId) || x.u.includes(x.o)) return false;
  return new Set(x.u).size === x.u.length;
}

/**
 * The reachability matrix as one member holds it: its own row, kept from its probes, and the
 * newest row of every other member it has heard. Sans-I/O: SwimCore feeds it and carries its rows.
 *
 * Staleness: an owner renews its row (a new version) every `renewMs` while the row lists
 * anything, and a row not renewed within `ttlMs` of its arrival is dropped. So a member that
 * missed the gossip of a row being emptied forgets it anyway, and push-pull need carry only rows
 * that list something: nothing, in a healthy cluster.
 */
export class Reachability {
  private readonly own = new Set<NodeId>();
  private version = 0;
  private readonly rows = new Map<NodeId, { row: ReachRow; at: number }>();
  /** Probes in a row answered only through a relay, per member (reset by a direct answer). */
  private readonly misses = new Map<NodeId, number>();
  private renewedAt = 0;

  constructor(
    private readonly self: NodeId,
    private readonly boot: string | undefined,
    /** How long a row heard is kept without a renewal (ms). */
    private readonly ttlMs = 3 * RENEW_MS,
  ) {}

  /**
   * This member's probe of `id` was answered, directly or only through a relay. On a lossy path
   * one lost ping or ack makes an indirect answer (~2 % of probes at 1 % loss), and every change
   * of a row is gossiped to every member: rows that moved with lost packets would flood the gossip
   * at scale. So `id` goes into the row after ROW_AFTER indirect answers in a row (SWIM probes
   * such a path again the next period; by chance ~10⁻⁵ of probes at 1 % loss), and out at the
   * first direct one. True when the row changed.
   */
  answered(id: NodeId, direct: boolean): boolean {
    if (direct) {
      this.misses.delete(id);
      return this.reachable(id);
    }
    const n = (this.misses.get(id) ?? 0) + 1;
    this.misses.set(id, n);
    return n >= ROW_AFTER && this.unreachable(id);
  }

  /**
   * Once every `everyMs`: drop rows not renewed within the TTL, and renew this member's own row if
   * it lists anything (returned, to be gossiped).
   */
  tick(now: number, everyMs: number): ReachRow | undefined {
    if (now - this.renewedAt < everyMs) return undefined;
    this.renewedAt = now;
    this.expire(now);
    return this.renew();
  }

  /** This member's probe of `id` failed directly. True when its row changed. */
  unreachable(id: NodeId): boolean {
    if (id === this.self || this.own.has(id) || this.own.size >= MAX_ROW) return false;
    this.own.add(id);
    this.version++;
    return true;
  }

  /** `id` answered this member directly. True when its row changed. */
  reachable(id: NodeId): boolean {
    if (!this.own.delete(id)) return false;
    this.version++;
    return true;
  }

  /** A new version of this member's own row, unchanged (the renewal of a non-empty row). */
  renew(): ReachRow | undefined {
    if (this.own.size === 0) return undefined;
    this.version++;
    return this.ownRow();
  }

  /**
   * Empty rows heard more than the TTL ago and not renewed since. The version stays, so a
   * straggling copy of the old row cannot bring it back.
   */
  expire(now: number): void {
    for (const r of this.rows.values())
      if (now - r.at > this.ttlMs && r.row.u.length > 0) r.row = { ...r.row, u: [] };
  }

  /** A member left or died: out of this member's row, and its own row dropped. */
  forget(id: NodeId): boolean {
    this.rows.delete(id);
    this.misses.delete(id);
    return this.reachable(id);
  }

  ownRow(): ReachRow {
    const row: ReachRow = { o: this.self, v: this.version, u: [...this.own].sort() };
    if (this.boot !== undefined) row.b = this.boot;
    return row;
  }

  /**
   * Take a row heard from the network if it is newer than the one held: the same life with a
   * higher version, or the owner's current life (`currentBoot`, as membership knows it) replacing
   * an earlier one. True when it was taken (and should be passed on).
   */
  merge(row: ReachRow, currentBoot: string | undefined, now: number): boolean {
    if (row.o === this.self) return false;
    // Only the owner's current life, when membership knows which that is.
    if (currentBoot !== undefined && row.b !== currentBoot) return false;
    const held = this.rows.get(row.o)?.row;
    if (held !== undefined && held.b === row.b && held.v >= row.v) return false;
    this.rows.set(row.o, { row: { ...row, u: [...row.u] }, at: now });
    return true;
  }

  /** Whether `from` has said it cannot reach `to` directly (this member's own probes for `from = self`). */
  cannotReach(from: NodeId, to: NodeId): boolean {
    if (from === this.self) return this.own.has(to);
    return this.rows.get(from)?.row.u.includes(to) ?? false;
  }

  /** Every row with something in it, this member's own included: the broken paths as known here. */
  matrix(): ReachRow[] {
    return this.nonEmpty().sort((a, b) => (a.o < b.o ? -1 : a.o > b.o ? 1 : 0));
  }

  /**
   * Rows to send whole in a push-pull exchange: those that list something, own first, up to
   * MAX_STATE_IDS names in all (a frame has a size limit; what does not fit travels by gossip).
   */
  fullState(): ReachRow[] {
    const out: ReachRow[] = [];
    let ids = 0;
    for (const row of this.nonEmpty()) {
      if (out.length >= MAX_ROWS_PER_MESSAGE || ids + row.u.length > MAX_STATE_IDS) break;
      out.push(row);
      ids += row.u.length;
    }
    return out;
  }

  private nonEmpty(): ReachRow[] {
    const all: ReachRow[] = [];
    if (this.own.size > 0) all.push(this.ownRow());
    for (const { row } of this.rows.values()) if (row.u.length > 0) all.push(row);
    return all;
  }
}
