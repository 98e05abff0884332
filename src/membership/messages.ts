import { type Address, isAddress, type NodeId } from "../net/transport.ts";
import { isReachRow, MAX_ROWS_PER_MESSAGE, type ReachRow } from "./reachability.ts";

/** A member's state as SWIM gossips it. */
export type MemberStatus = "alive" | "suspect" | "dead" | "left";

/** One gossiped fact: `id` was in state `s` at incarnation `inc`. */
export interface Update {
  id: NodeId;
  inc: number;
  s: MemberStatus;
  /** Where the member listens (alive updates), so that peers can dial it. */
  addr?: Address;
  /** Who raised the suspicion (suspect updates): independent suspicions shorten the timeout. */
  by?: NodeId;
  /** The member's host (alive updates): members on one host fail together. */
  host?: string;
  /** Which life of the member this is (its transport's boot id), so reports can name it. */
  boot?: string;
}

/**
 * SWIM's messages. `p: "swim"` lets several protocols share one transport. `g` carries membership
 * updates; `r`, when present, rows of the reachability matrix.
 */
export type SwimMessage = (
  | { p: "swim"; t: "ping"; seq: number; g: Update[]; x?: string }
  | { p: "swim"; t: "ack"; seq: number; g: Update[]; x?: string }
  | { p: "swim"; t: "ping-req"; seq: number; target: NodeId; g: Update[] }
  | { p: "swim"; t: "nack"; seq: number; g: Update[] }
  | { p: "swim"; t: "join"; g: Update[] }
  | { p: "swim"; t: "state"; g: Update[] }
) & { r?: ReachRow[] };

const STATUSES = new Set<string>(["alive", "suspect", "dead", "left"]);
const TYPES = new Set<string>(["ping", "ack", "ping-req", "nack", "join", "state"]);
/** Largest gossip list accepted in one message (a full state answer included). */
export const MAX_UPDATES_PER_MESSAGE = 100_000;

const isId = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;
const isShort = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 64;
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function isUpdate(u: unknown): u is Update {
  if (typeof u !== "object" || u === null) return false;
  const x = u as Update;
  if (!isId(x.id) || !isSeq(x.inc) || !STATUSES.has(x.s)) return false;
  if (x.by !== undefined && !isId(x.by)) return false;
  if (x.host !== undefined && !isShort(x.host)) return false;
  if (x.boot !== undefined && !isShort(x.boot)) return false;
  return x.addr === undefined || isAddress(x.addr);
}

/** Whether a message is addressed to SWIM at all (others on the transport are not its business). */
export function isSwim(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "swim";
}

/** Validate a SWIM message completely; undefined when anything about it is malformed. */
export function parseSwim(m: unknown): SwimMessage | undefined {
  if (!isSwim(m)) return undefined;
  const x = m as Partial<SwimMessage> & { seq?: unknown; target?: unknown };
  if (typeof x.t !== "string" || !TYPES.has(x.t)) return undefined;
  if (!Array.isArray(x.g) || x.g.length > MAX_UPDATES_PER_MESSAGE || !x.g.every(isUpdate)) return undefined;
  if (x.t !== "join" && x.t !== "state" && !isSeq(x.seq)) return undefined;
  if (x.t === "ping-req" && !isId(x.target)) return undefined;
  const rows = (m as { r?: unknown }).r;
  if (
    rows !== undefined &&
    !(Array.isArray(rows) && rows.length <= MAX_ROWS_PER_MESSAGE && rows.every(isReachRow))
  )
    return undefined;
  const ext = (m as { x?: unknown }).x;
  if (ext !== undefined && !(typeof ext === "string" && ext.length <= 64)) return undefined;
  return x as SwimMessage;
}
