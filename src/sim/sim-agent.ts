import { AGENT_REANNOUNCE_MS } from "../agent/host-agent.ts";
import type { AgentNotice } from "../agent/messages.ts";
import { noticeToReport } from "../detect/agent-detector.ts";
import type { DetectionNode } from "../detect/detection-node.ts";
import type { NodeId } from "../net/transport.ts";
import type { Timer } from "../runtime/clock.ts";
import type { SimContext } from "./simulation.ts";

/** Time the real agent takes from a socket close to a confirmed exit (/proc check), in simulation (ms). */
export const SIM_EXIT_CONFIRM_MS = 0.3;

/**
 * The host agent in simulation. The real agent learns of a local exit from the kernel closing the
 * process's socket and then /proc; in simulation the Simulation's lifecycle events stand in for
 * both. What it then does is the real protocol: a notice to every member it knows, over the
 * simulated network, subject to every fault on the way.
 */
export class SimHostAgent {
  /** The local processes and the incarnation each runs (absent: exited). */
  private readonly running = new Map<NodeId, number>();
  private timer: Timer | undefined;

  constructor(
    readonly node: DetectionNode,
    private readonly ctx: SimContext,
    private readonly host: string,
    /** The local processes running when the agent starts, with their incarnations. */
    processes: ReadonlyArray<readonly [NodeId, number]> = [],
  ) {
    for (const [p, boot] of processes) this.running.set(p, boot);
  }

  start(): void {
    this.node.start();
    this.reannounce();
  }

  stop(): void {
    this.timer?.cancel();
    this.node.stop();
  }

  /** A process on this host exited (crashed) or started again (registered anew), as incarnation `boot`. */
  local(kind: "exit" | "up", subject: NodeId, boot: number): void {
    if (kind === "up") this.running.set(subject, boot);
    else this.running.delete(subject);
    this.ctx.clock.setTimer(SIM_EXIT_CONFIRM_MS, () => {
      const notice = this.announce(kind, subject, boot);
      // The agent's own monitor learns it too, as the real agent's does.
      this.node.monitor.publish(noticeToReport(notice, this.ctx.clock.now(), this.ctx.id));
      this.ctx.trace(`agent ${kind} ${subject}#${boot}`);
    });
  }

  private announce(kind: "exit" | "up", subject: NodeId, boot: number): AgentNotice {
    const base = { p: "agent" as const, subject, host: this.host, pid: boot + 1, boot: String(boot) };
    const notice: AgentNotice =
      kind === "exit" ? { ...base, t: "exit", detail: `incarnation ${boot} exited` } : { ...base, t: "up" };
    for (const m of this.node.swim.members()) {
      if (m.id !== subject && (m.status === "alive" || m.status === "suspect"))
        this.ctx.transport.send(m.id, notice);
    }
    return notice;
  }

  /** Notices travel a lossy network: say again which processes run here (as the real agent does). */
  private reannounce(): void {
    for (const [subject, boot] of this.running) this.announce("up", subject, boot);
    this.timer = this.ctx.clock.setTimer(AGENT_REANNOUNCE_MS, () => this.reannounce());
  }
}
