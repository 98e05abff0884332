import { type AgentNotice, isAgentMessage, parseNotice } from "../agent/messages.ts";
import type { NodeId, Transport } from "../net/transport.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Detector } from "./detector.ts";
import type { Monitor } from "./monitor.ts";
import type { ReportEvent } from "./report.ts";

/** How a node turns a host agent's notice into a report. */
export function noticeToReport(n: AgentNotice, now: number, observer: NodeId): ReportEvent {
  if (n.t === "exit") {
    return {
      type: "failure",
      ...(n.boot ? { boot: n.boot } : {}),
      subject: n.subject,
      kind: "process-exit",
      certainty: "certain",
      detectedAt: now,
      since: now,
      evidence: [{ source: "agent", what: `exit on ${n.host}: ${n.detail}`, at: now, observer }],
      detector: "agent",
    };
  }
  return {
    type: "recovered",
    subject: n.subject,
    kind: "process-exit",
    detectedAt: now,
    failedAt: now,
    detector: "agent",
  };
}

/**
 * Listens for host agents' notices on the cluster transport: a process exit an agent saw is
 * reported `process-exit`, **certain** (the agent checked /proc: the pid is gone); a process that
 * registers again clears it. Malformed notices are counted and ignored.
 */
export class AgentDetector implements Detector {
  readonly name = "agent";
  malformed = 0;
  private off: (() => void) | undefined;
  /** The boot each subject's current exit report is about. */
  private readonly exited = new Map<NodeId, string | undefined>();
  /** The life of each subject its agent says holds a lease (see AgentNotice "up"). */
  private readonly leased = new Map<NodeId, string>();

  constructor(private readonly o: { id: NodeId; transport: Transport; monitor: Monitor; clock: Clock }) {}

  start(): void {
    this.off = this.o.transport.on("message", (_from, m) => {
      if (!isAgentMessage(m)) return;
      const n = parseNotice(m);
      if (!n) {
        this.malformed++;
        return;
      }
      if (n.subject === this.o.id) return; // an old life of ours: SWIM refutation handles it
      if (n.t === "up" && n.leased && n.boot) this.leased.set(n.subject, n.boot);
      if (n.t === "exit") {
        this.exited.set(n.subject, n.boot);
      } else {
        // Only a *new* life clears an exit: an "up" about the boot that exited (sent before the
        // exit, delayed on the way, or repeated) does not.
        if (!this.exited.has(n.subject)) return;
        const failed = this.exited.get(n.subject);
        if (failed !== undefined && n.boot !== undefined && failed === n.boot) return;
        this.exited.delete(n.subject);
      }
      this.o.monitor.publish(noticeToReport(n, this.o.clock.now(), this.o.id));
    });
  }

  stop(): void {
    this.off?.();
  }

  /** Whether life `boot` of `subject` is bound by a lease, as its host agent announced. */
  leaseBound(subject: NodeId, boot: string | undefined): boolean {
    return boot !== undefined && this.leased.get(subject) === boot;
  }
}
