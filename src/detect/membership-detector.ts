import type { Member } from "../membership/swim-core.ts";
import type { SwimNode } from "../membership/swim-node.ts";
import type { ConnectionEvent, NodeId, Transport } from "../net/transport.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Detector } from "./detector.ts";
import type { Monitor } from "./monitor.ts";
import type { Evidence, FailureKind, FailureReport } from "./report.ts";

/** How long a transport `refused` stays relevant evidence that the host is up (ms). */
export const REFUSED_EVIDENCE_MS = 30_000;

/**
 * Turns SWIM's verdicts into typed reports. A member SWIM declares dead (no direct or indirect
 * probe answered through the whole suspicion timeout, from several members) is reported as
 *  - `process-exit`, suspected, when its host recently refused a connection (the kernel answered:
 *    the machine is up, nothing listens), or
 *  - `host-crash`, suspected, when nothing answered at all.
 * Certainty needs more than SWIM can know (the host agent, or a fence). A member that comes back
 * (a higher incarnation) is `recovered`; one that left gracefully is not a failure.
 */
export class MembershipDetector implements Detector {
  readonly name = "swim";
  private readonly refused = new Map<NodeId, number>();
  private readonly published = new Map<NodeId, FailureReport>();
  private readonly suspectedAt = new Map<NodeId, number>();
  private readonly offs: Array<() => void> = [];

  constructor(private readonly o: { swim: SwimNode; transport: Transport; monitor: Monitor; clock: Clock }) {}

  start(): void {
    this.offs.push(
      this.o.swim.on("member", (m, prev) => this.onMember(m, prev)),
      this.o.transport.on("connection", (e) => this.onConnection(e)),
    );
  }

  stop(): void {
    for (const off of this.offs.splice(0)) off();
  }

  private onConnection(e: ConnectionEvent): void {
    if (e.kind === "refused") this.refused.set(e.peer, e.at);
    else if (e.kind === "connected") this.refused.delete(e.peer);
  }

  private onMember(m: Member, prev: Member["status"] | undefined): void {
    const now = this.o.clock.now();
    if (m.status === "suspect") {
      this.suspectedAt.set(m.id, now);
      return;
    }
    const since = this.suspectedAt.get(m.id) ?? now;
    this.suspectedAt.delete(m.id);
    if (m.status === "dead") {
      const evidence: Evidence[] = [
        { source: "swim", what: "suspicion-timeout", at: now, observer: this.o.swim.id },
      ];
      const refusedAt = this.refused.get(m.id);
      let kind: FailureKind = "host-crash";
      if (refusedAt !== undefined && now - refusedAt <= REFUSED_EVIDENCE_MS) {
        kind = "process-exit";
        evidence.push({ source: "transport", what: "ECONNREFUSED", at: refusedAt, observer: this.o.swim.id });
      }
      const report: FailureReport = {
        type: "failure",
        subject: m.id,
        kind,
        certainty: "suspected",
        detectedAt: now,
        since,
        evidence,
        detector: this.name,
      };
      this.published.set(m.id, report);
      this.o.monitor.publish(report);
    } else if (m.status === "alive" && prev !== undefined) {
      const failed = this.published.get(m.id);
      if (failed) {
        this.published.delete(m.id);
        this.o.monitor.publish({
          type: "recovered",
          subject: m.id,
          kind: failed.kind,
          detectedAt: now,
          failedAt: failed.detectedAt,
          detector: this.name,
        });
      }
    } else if (m.status === "left") {
      this.published.delete(m.id);
      this.o.monitor.forget(m.id, now, this.name);
    }
  }
}
