import type { NodeId } from "../net/transport.ts";

/**
 * The one failure type that flows through faultline (DESIGN.md rule 4). Detectors produce reports;
 * the Monitor keeps the current conditions and pushes every change to subscribers.
 */
export const FAILURE_KINDS = [
  "process-exit",
  "host-crash",
  "partition",
  "route-failure",
  "congestion",
  "corruption",
  "route-instability",
  "app-signal",
] as const;
export type FailureKind = (typeof FAILURE_KINDS)[number];

/** `certain` only when proven (the agent saw the exit; a fence guarantees the suspect no longer acts). */
export type Certainty = "certain" | "suspected";

export interface Evidence {
  /** What produced it: "swim", "transport", "agent", "phi", ... */
  source: string;
  /** A short machine-readable description ("probe-timeout", "ECONNREFUSED", "phi=9.3"). */
  what: string;
  /** Monotonic time it was observed. */
  at: number;
  /** The node that observed it. */
  observer?: NodeId;
}

export interface FailureReport {
  type: "failure";
  /** The node (or process) the report is about. */
  subject: NodeId;
  kind: FailureKind;
  certainty: Certainty;
  /** For path conditions (route failure, congestion, corruption, instability): the other end. */
  peer?: NodeId;
  /** The subject's incarnation (process boot) the report is about, when the detector knows it. */
  boot?: string;
  /** For partitions: the sides, as this node sees them. */
  sides?: NodeId[][];
  /** Monotonic time of detection, on the reporting node's clock. */
  detectedAt: number;
  /** When the condition is believed to have started (<= detectedAt). */
  since: number;
  evidence: Evidence[];
  /** Name of the detector that produced it. */
  detector: string;
}

export interface RecoveredReport {
  type: "recovered";
  subject: NodeId;
  kind: FailureKind;
  peer?: NodeId;
  detectedAt: number;
  /** When the failure this clears was reported. */
  failedAt: number;
  detector: string;
}

export type ReportEvent = FailureReport | RecoveredReport;

/** Which reports a subscriber wants. Every field narrows; an empty filter takes everything. */
export interface ReportFilter {
  subject?: NodeId | readonly NodeId[];
  kind?: FailureKind | readonly FailureKind[];
  certainty?: Certainty;
  /** Include recovered events (default true). */
  recovered?: boolean;
}

const asList = <T>(v: T | readonly T[] | undefined): readonly T[] | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? (v as readonly T[]) : [v as T];

export function matches(filter: ReportFilter, r: ReportEvent): boolean {
  if (r.type === "recovered" && filter.recovered === false) return false;
  const subjects = asList(filter.subject);
  if (subjects && !subjects.includes(r.subject)) return false;
  const kinds = asList(filter.kind);
  if (kinds && !kinds.includes(r.kind)) return false;
  if (filter.certainty && r.type === "failure" && r.certainty !== filter.certainty) return false;
  return true;
}

/** The key of a condition: one subject, one kind, and for path conditions the other end. */
export function conditionKey(r: { subject: NodeId; kind: FailureKind; peer?: NodeId }): string {
  return r.peer === undefined ? `${r.subject}\u0000${r.kind}` : `${r.subject}\u0000${r.kind}\u0000${r.peer}`;
}
