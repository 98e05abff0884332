import type { Address, NodeId } from "../net/transport.ts";
import type { Rng } from "../runtime/rng.ts";
import type { MemberStatus, SwimMessage } from "./messages.ts";
import type { ReachRow } from "./reachability.ts";

/** Defaults follow HashiCorp memberlist's LAN configuration. */
export const SWIM_DEFAULTS = {
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  retransmitMult: 4,
  maxPiggyback: 16,
  awarenessMax: 8,
  /** Full state exchange with one random member this often (anti-entropy; memberlist: 30 s). */
  pushPullIntervalMs: 30_000,
} as const;

export type SwimConfig = { -readonly [K in keyof typeof SWIM_DEFAULTS]: number };

export interface Member {
  id: NodeId;
  incarnation: number;
  status: MemberStatus;
  /** Time of the last status change (the core's clock). */
  since: number;
  addr?: Address;
  /** The member's host and boot, as it announces them (see SwimCoreOptions). */
  host?: string;
  boot?: string;
}

export interface SwimCoreOptions {
  id: NodeId;
  rng: Rng;
  /** Members to send `join` to at start (and while this node knows nobody). */
  seeds?: readonly NodeId[];
  config?: Partial<SwimConfig>;
  /** This node's address, gossiped with its alive updates. */
  address?: Address;
  /** The host this node runs on, gossiped: a host's members are expected to fail together. */
  host?: string;
  /** This life of the node (its transport's boot id), gossiped so reports can name which life failed. */
  boot?: string;
  /**
   * A few bytes another protocol rides on the probes to `peer` (FUSE's digest of the groups the
   * two share): attached to every ping and ack sent to it; what arrives comes out as `extension`.
   */
  extension?: (peer: NodeId) => string | undefined;
  /**
   * Members known from the start, as alive at incarnation 0 (a static bootstrap: large simulated
   * clusters skip the join storm this way). Real deployments join through seeds.
   */
  members?: readonly NodeId[];
}

export type SwimInput =
  | { type: "start"; now: number }
  | { type: "message"; now: number; from: NodeId; msg: unknown }
  | { type: "timer"; now: number; timer: string }
  | { type: "leave"; now: number }
  /**
   * Ping `target` now, outside the probe rotation (a detector that needs fresh word of a member:
   * does a silent process's host agent still answer?). An answer comes out as a direct `path`
   * output; no answer changes nothing (no suspicion: the regular probes decide that).
   */
  | { type: "ask"; now: number; target: NodeId };

export type SwimOutput =
  | { type: "send"; to: NodeId; msg: SwimMessage }
  | { type: "set-timer"; timer: string; afterMs: number }
  | { type: "cancel-timer"; timer: string }
  | { type: "member"; member: Member; prev: MemberStatus | undefined }
  /**
   * How a probe of `peer` went: answered directly (with its round trip), or only through a relay
   * — the member is alive but the direct path from here is not working.
   */
  | { type: "path"; peer: NodeId; direct: boolean; rttMs?: number }
  /** `peer` sent its extension payload (see SwimCoreOptions.extension). */
  | { type: "extension"; peer: NodeId; x: string }
  /** A row of the reachability matrix changed: this member's own, or a newer one heard. */
  | { type: "reach"; row: ReachRow };
