import { FAILURE_KINDS, type FailureKind } from "../detect/report.ts";
import type { NodeId } from "../net/transport.ts";

export type GroupId = string;

/** Why a group failed, as every member's handler receives it. */
export type FuseReason =
  /** A member (or the path to it) failed, as the detector reported it. */
  | { type: "member-failed"; member: NodeId; kind: FailureKind; detail?: string }
  /** A member restarted without the group (a new life: its groups are gone). */
  | { type: "member-restarted"; member: NodeId }
  /** The application said so: `fuse.signal(group, payload)` at `by`. */
  | { type: "signal"; by: NodeId; payload?: unknown }
  /** Creation did not complete: `member` could not be reached in time. */
  | { type: "create-failed"; member: NodeId; detail: string }
  /** Two members disagreed about the group and its root could not vouch for it. */
  | { type: "lost"; member: NodeId; detail: string };

/** Why a group failed, in words a person reads (`faultline up`, the lab). */
export function describeFuseReason(r: FuseReason): string {
  switch (r.type) {
    case "member-failed":
      return `${r.member} ${r.kind}${r.detail ? ` (${r.detail})` : ""}`;
    case "member-restarted":
      return `${r.member} restarted`;
    case "signal":
      return `signal by ${r.by}`;
    case "create-failed":
      return `creation failed: ${r.member} ${r.detail}`;
    case "lost":
      return `lost at ${r.member}: ${r.detail}`;
  }
}

/** FUSE's messages (besides the digest that rides on SWIM's probes). */
export type FuseMessage =
  | { p: "fuse"; t: "create"; g: GroupId; members: NodeId[] }
  | { p: "fuse"; t: "create-ack"; g: GroupId; boot: string }
  /** Creation completed: every member's life at creation (a later life has lost the group). */
  | { p: "fuse"; t: "commit"; g: GroupId; members: NodeId[]; boots: Record<NodeId, string> }
  | { p: "fuse"; t: "commit-ack"; g: GroupId }
  | { p: "fuse"; t: "fail"; g: GroupId; reason: FuseReason }
  | { p: "fuse"; t: "fail-ack"; g: GroupId }
  /** Digests differed: the groups I hold with you (live or being created). */
  | { p: "fuse"; t: "list"; groups: GroupId[]; reply: boolean }
  /** Repair: is this group still live at its root? */
  | { p: "fuse"; t: "ask"; g: GroupId; for: NodeId }
  | { p: "fuse"; t: "answer"; g: GroupId; live: boolean };

/** A signal's payload is small: it travels in one frame to every member. */
export const MAX_PAYLOAD_BYTES = 1024;
export const MAX_GROUP_MEMBERS = 256;

const isId = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;
const isIds = (v: unknown, max: number): v is string[] =>
  Array.isArray(v) && v.length <= max && v.every(isId);
const KINDS = new Set<string>(FAILURE_KINDS);

function isReason(r: unknown): r is FuseReason {
  if (typeof r !== "object" || r === null) return false;
  const x = r as Record<string, unknown>;
  switch (x.type) {
    case "member-failed":
      return isId(x.member) && typeof x.kind === "string" && KINDS.has(x.kind);
    case "member-restarted":
      return isId(x.member);
    case "signal":
      return isId(x.by);
    case "create-failed":
    case "lost":
      return isId(x.member) && typeof x.detail === "string" && x.detail.length <= 1024;
    default:
      return false;
  }
}

export function isFuse(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "fuse";
}

/** Validate a FUSE message completely; undefined when anything about it is malformed. */
export function parseFuse(m: unknown): FuseMessage | undefined {
  if (!isFuse(m)) return undefined;
  const x = m as Record<string, unknown>;
  if (x.t !== "list" && !isId(x.g)) return undefined;
  switch (x.t) {
    case "create":
      return isIds(x.members, MAX_GROUP_MEMBERS) ? (m as FuseMessage) : undefined;
    case "create-ack":
      return isId(x.boot) ? (m as FuseMessage) : undefined;
    case "commit": {
      if (!isIds(x.members, MAX_GROUP_MEMBERS) || typeof x.boots !== "object" || x.boots === null)
        return undefined;
      return Object.values(x.boots).every(isId) ? (m as FuseMessage) : undefined;
    }
    case "commit-ack":
    case "fail-ack":
      return m as FuseMessage;
    case "ask":
      return isId(x.for) ? (m as FuseMessage) : undefined;
    case "fail":
      return isReason(x.reason) ? (m as FuseMessage) : undefined;
    case "list":
      return isIds(x.groups, 1_000_000) && typeof x.reply === "boolean" ? (m as FuseMessage) : undefined;
    case "answer":
      return typeof x.live === "boolean" ? (m as FuseMessage) : undefined;
    default:
      return undefined;
  }
}
