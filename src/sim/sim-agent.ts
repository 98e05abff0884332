import { AGENT_REANNOUNCE_MS } from "../agent/host-agent-options.ts";
import type { AgentNotice } from "../agent/messages.ts";
import { noticeToReport } from "../detect/agent-detector.ts";
import type { DetectionNode } from "../detect/detection-node.ts";
import type { NodeId } from "../net/transport.ts";
import type { Timer } from "../runtime/clock.ts";
import type { SimContext } from "./simulation.ts";

/** Time the real agent takes from a socket close to a confirmed exit (/proc check), in simulation (ms). */
export const SIM_EXIT_CONFIRM_MS = 0.3;

/**
 * The process leases of one simulated host, as the kernel would hold them between an agent and
 * its processes (a Unix socket: no network fault reaches it): until when each process's current
 * life may act. Outlives the agent's crashes, as the processes do.
 */
export class HostLeases {
  private readonly until = new Map<NodeId, { boot: number; until: number }>();

  grant(p: NodeId, boot: number, until: number): boolean {
    const had = this.until.get(p);
    const first = had?.boot !== boot;
    if (first || had.until < until) this.until.set(p, { boot, until });
    return first;
  }

  /** Until when life `boot` of `p` may act (undefined: it never held a lease). */
  of(p: NodeId, boot: number): number | undefined {
    const l = this.until.get(p);
    return l?.boot === boot ? l.until : undefined;
  }
}

export interface SimLeaseOptions {
  leases: HostLeases;
  /** The agent's cluster lease ended: kill the host's processes and this agent (then start anew). */
  onFence: (why: string) => void;
}

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
  private grantTimer: Timer | undefined;
  private leasedSelf = false;

  constructor(
    readonly node: DetectionNode,
    private readonly ctx: SimContext,
    private readonly host: string,
    /** The local processes running when the agent starts, with their incarnations. */
    processes: ReadonlyArray<readonly [NodeId, number]> = [],
    private readonly lease?: SimLeaseOptions,
  ) {
    for (const [p, boot] of processes) this.running.set(p, boot);
  }

  start(): void {
    this.node.start();
    this.reannounce();
    const fencing = this.node.fencing;
    if (this.lease && fencing) {
      fencing.hold(`${this.ctx.incarnation}`, (why) => {
        this.ctx.trace(`agent lease ${why}: fencing host ${this.host}`);
        this.lease?.onFence(why);
      });
      this.grantLeases();
    }
  }

  stop(): void {
    this.timer?.cancel();
    this.grantTimer?.cancel();
    this.node.stop();
  }

  /** Whether this agent may act now (its cluster lease is held; always, without fencing). */
  holdsLease(): boolean {
    const lease = this.node.fencing?.lease;
    return lease ? lease.holds(this.ctx.clock.now()) : !this.lease;
  }

  /**
   * Renew the local processes' leases (as the real agent answers their renewals), never beyond
   * what is left of its own; and say which lives are bound by a lease.
   */
  private grantLeases(): void {
    const fencing = this.node.fencing;
    const lease = fencing?.lease;
    if (!this.lease || !fencing || !lease) return;
    const now = this.ctx.clock.now();
    if (lease.holds(now)) {
      if (!this.leasedSelf) {
        this.leasedSelf = true;
        this.announce("up", this.ctx.id, this.ctx.incarnation, true);
      }
      const until = now + Math.min(fencing.config.processLeaseMs, lease.remaining(now));
      for (const [p, boot] of this.running) {
        if (this.lease.leases.grant(p, boot, until)) this.announce("up", p, boot, true);
      }
    }
    this.grantTimer = this.ctx.clock.setTimer(fencing.config.processLeaseMs / 4, () => this.grantLeases());
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

  private announce(kind: "exit" | "up", subject: NodeId, boot: number, leased = false): AgentNotice {
    const base = { p: "agent" as const, subject, host: this.host, pid: boot + 1, boot: String(boot) };
    const notice: AgentNotice =
      kind === "exit"
        ? { ...base, t: "exit", detail: `incarnation ${boot} exited` }
        : { ...base, t: "up", ...(leased ? { leased } : {}) };
    for (const m of this.node.swim.members()) {
      if (m.id !== subject && (m.status === "alive" || m.status === "suspect"))
        this.ctx.transport.send(m.id, notice);
    }
    return notice;
  }

  /** Notices travel a lossy network: say again which processes run here (as the real agent does). */
  private reannounce(): void {
    for (const [subject, boot] of this.running) {
      const leased = this.lease?.leases.of(subject, boot) !== undefined;
      this.announce("up", subject, boot, leased);
    }
    if (this.leasedSelf) this.announce("up", this.ctx.id, this.ctx.incarnation, true);
    this.timer = this.ctx.clock.setTimer(AGENT_REANNOUNCE_MS, () => this.reannounce());
  }
}
