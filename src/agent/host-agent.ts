import { unlinkSync } from "node:fs";
import type { Logger } from "pino";
import { noticeToReport } from "../detect/agent-detector.ts";
import { DetectionNode } from "../detect/detection-node.ts";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { Address, ConnectionEvent, NodeId } from "../net/transport.ts";
import { type Clock, realClock, type Timer } from "../runtime/clock.ts";
import { silentLogger } from "../runtime/logger.ts";
import { createRng } from "../runtime/rng.ts";
import { ExitWatch } from "./exit-watch.ts";
import {
  AGENT_DEFAULTS,
  AGENT_REANNOUNCE_MS,
  agentId,
  type HostAgentOptions,
  NO_FENCING_RENEW_MS,
  type Registration,
} from "./host-agent-options.ts";
import { type AgentNotice, type LeaseGrant, parseLocal, type UnregisterAck } from "./messages.ts";
import { procExiting, procGone, procIdentity } from "./proc.ts";

export {
  AGENT_DEFAULTS,
  AGENT_REANNOUNCE_MS,
  agentId,
  FENCED_EXIT_CODE,
  type HostAgentOptions,
} from "./host-agent-options.ts";

/**
 * The host agent: one per host. Local processes register over a Unix socket (an authenticated
 * faultline connection). When a registered process's connection ends, the agent checks /proc: if
 * the pid is gone (or a zombie, or recycled) the process has exited — a fact, not a guess — and
 * the agent tells every cluster member at once: `process-exit`, certain. The agent is itself a
 * SWIM member, so "the process is gone but its host answers" is told apart from "the host is gone".
 */
export class HostAgent {
  readonly id: NodeId;
  readonly local: TcpTransport;
  readonly cluster: TcpTransport;
  detection: DetectionNode | undefined;
  private readonly registered = new Map<NodeId, Registration>();
  private readonly pending = new Set<Timer>();
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly exitConfirmMs: number;
  private leasedSelf = false;
  private fencedWhy: string | undefined;
  private exitWatch: ExitWatch | undefined;

  constructor(private readonly o: HostAgentOptions) {
    this.id = agentId(o.host);
    this.clock = o.clock ?? realClock;
    this.log = (o.logger ?? silentLogger()).child({ component: "agent", host: o.host });
    this.exitConfirmMs = o.exitConfirmMs ?? AGENT_DEFAULTS.exitConfirmMs;
    const logger = o.logger ?? silentLogger();
    this.local = new TcpTransport({ id: this.id, clusterKey: o.clusterKey, path: o.socketPath, logger });
    this.cluster = new TcpTransport({
      id: this.id,
      clusterKey: o.clusterKey,
      host: o.listenHost ?? "127.0.0.1",
      port: o.port ?? 0,
      peers: o.seeds ?? {},
      logger,
    });
  }

  async start(): Promise<void> {
    try {
      unlinkSync(this.o.socketPath); // a stale socket file from a previous agent
    } catch {}
    if (this.o.kernelExitNotices ?? true) {
      this.exitWatch = await ExitWatch.start(this.log);
      this.exitWatch?.onExit((pid, kind) => this.onKernelExit(pid, kind));
    }
    this.local.on("message", (from, m) => this.onLocal(from, m));
    this.local.on("connection", (e) => this.onLocalConnection(e));
    try {
      await this.local.start();
      await this.cluster.start();
    } catch (err) {
      await Promise.all([this.local.stop(), this.exitWatch?.stop()]);
      throw err;
    }
    if (Object.keys(this.o.seeds ?? {}).length > 0) this.join(this.o.seeds ?? {});
  }

  /** Add cluster members and (the first time) start SWIM with them as seeds. */
  join(peers: Record<NodeId, Address>): void {
    for (const [id, addr] of Object.entries(peers)) if (id !== this.id) this.cluster.addPeer(id, addr);
    if (this.detection) return;
    this.detection = new DetectionNode({
      id: this.id,
      clock: this.clock,
      rng: createRng((Math.random() * 2 ** 32) >>> 0), // real-io: SWIM target order only
      transport: this.cluster,
      seeds: Object.keys(peers).filter((id) => id !== this.id),
      address: this.cluster.address(),
      host: this.o.host,
      boot: this.cluster.boot,
      ...(this.o.fencing ? { fencing: this.o.fencing } : {}),
      learnAddress: (id, addr) => this.cluster.addPeer(id, addr),
      ...(this.o.swim ? { swim: this.o.swim } : {}),
      logger: this.o.logger ?? silentLogger(),
    });
    this.detection.start();
    this.detection.fencing?.hold(this.cluster.boot, (why) => this.fence(`cluster lease ${why}`));
    this.reannounce();
  }

  /** Whether this agent may act: it holds its cluster lease (always, with fencing off). */
  holdsLease(): boolean {
    if (!this.o.fencing) return true;
    return this.detection?.fencing?.lease?.holds(this.clock.now()) ?? false;
  }

  /** Why the agent fenced itself, once it has. */
  get fenced(): string | undefined {
    return this.fencedWhy;
  }

  /** The cluster lease ended: stop every registered process at once, then stop acting. */
  private fence(why: string): void {
    if (this.fencedWhy) return;
    this.fencedWhy = why;
    for (const [id, r] of this.registered) {
      if (procGone(r.proc)) continue; // procGone also rules out a recycled pid
      try {
        process.kill(r.proc.pid, "SIGKILL");
        this.log.warn({ process: id, pid: r.proc.pid, why }, "fenced: killed a registered process");
      } catch (err) {
        this.log.error({ err, process: id, pid: r.proc.pid }, "fenced: could not kill a registered process");
      }
    }
    this.o.onFenced?.(why);
  }

  /** Answer a process's lease renewal: never longer than this agent's own lease has left. */
  private grant(from: NodeId, seq: number): void {
    const c = this.o.fencing;
    const r = this.registered.get(from);
    let ms: number | null = null;
    if (c) {
      const lease = this.detection?.fencing?.lease;
      const now = this.clock.now();
      ms = this.fencedWhy || !lease ? 0 : Math.min(c.processLeaseMs, lease.remaining(now));
      if (lease?.holds(now) && !this.leasedSelf) {
        this.leasedSelf = true;
        this.announceSelf();
      }
    }
    const answer: LeaseGrant = {
      p: "agent",
      t: "lease",
      seq,
      ms,
      everyMs: c ? c.processLeaseMs / 4 : NO_FENCING_RENEW_MS,
    };
    this.local.send(from, answer);
    if (r && ms !== null && ms > 0 && !r.leased) {
      r.leased = true;
      this.broadcast(this.upNotice(from, r), false);
    }
  }

  private upNotice(subject: NodeId, r: Registration): AgentNotice {
    return {
      p: "agent",
      t: "up",
      subject,
      host: this.o.host,
      pid: r.proc.pid,
      ...(r.boot ? { boot: r.boot } : {}),
      ...(r.leased ? { leased: true } : {}),
    };
  }

  /** This agent's own life is lease-bound: peers may then fence it and be certain. */
  private announceSelf(): void {
    this.broadcast(
      {
        p: "agent",
        t: "up",
        subject: this.id,
        host: this.o.host,
        pid: process.pid,
        boot: this.cluster.boot,
        leased: true,
      },
      false,
    );
  }

  /** Say again, every AGENT_REANNOUNCE_MS, which processes run here: repairs lost "up" notices. */
  private reannounce(): void {
    for (const [subject, r] of this.registered)
      if (!r.unregistered && !r.exited) this.broadcast(this.upNotice(subject, r), false);
    if (this.leasedSelf) this.announceSelf();
    const t = this.clock.setTimer(AGENT_REANNOUNCE_MS, () => {
      this.pending.delete(t);
      this.reannounce();
    });
    this.pending.add(t);
  }

  async stop(): Promise<void> {
    for (const t of this.pending) t.cancel();
    this.pending.clear();
    this.detection?.stop();
    await Promise.all([this.local.stop(), this.cluster.stop(), this.exitWatch?.stop()]);
    try {
      unlinkSync(this.o.socketPath);
    } catch {}
  }

  /** Ids of the processes registered here now. */
  processes(): NodeId[] {
    return [...this.registered].filter(([, r]) => !r.exited).map(([id]) => id);
  }

  private onLocal(from: NodeId, m: unknown): void {
    const msg = parseLocal(m);
    if (!msg) {
      this.log.warn({ from }, "ignored a malformed message on the local socket");
      return;
    }
    const tomb = this.registered.get(from);
    if (tomb?.exited) {
      // Written before it died (its exit is announced) — unless a new process takes up the id.
      if (msg.t !== "register" || msg.pid === tomb.proc.pid) return;
      this.registered.delete(from);
    }
    if (msg.t === "unregister") {
      const r = this.registered.get(from);
      if (r) r.unregistered = true;
      // Acknowledged, so the process closes only once its exit can no longer be taken for a failure.
      this.local.send(from, { p: "agent", t: "unregistered" } satisfies UnregisterAck);
      return;
    }
    if (msg.t === "renew") {
      this.grant(from, msg.seq);
      return;
    }
    const proc = procIdentity(msg.pid);
    if (!proc || procExiting(proc)) {
      this.log.warn({ from, pid: msg.pid }, "a process registered with a pid that is not running: ignored");
      return;
    }
    const had = this.registered.get(from);
    if (had && had.proc.pid !== proc.pid) this.forget(from, had);
    this.exitWatch?.watch(proc.pid);
    this.registered.set(from, {
      proc,
      boot: msg.boot,
      since: this.clock.now(),
      unregistered: false,
      leased: had !== undefined && had.boot === msg.boot && had.leased,
    });
    this.log.info({ process: from, pid: msg.pid }, "process registered");
    if (had) return;
    this.broadcast(this.upNotice(from, this.registered.get(from)!));
  }

  private onLocalConnection(e: ConnectionEvent): void {
    if (e.kind === "connected") return;
    const r = this.registered.get(e.peer);
    if (!r) return;
    if (r.unregistered || r.exited) {
      this.forget(e.peer, r);
      return;
    }
    this.confirmExit(e.peer, r, this.clock.now());
  }

  /**
   * The kernel says the thread group `pid` died (`exit`) or one of its threads began to exit
   * (`dying`). Believe it for a registration only when /proc agrees (procExiting): this very process
   * (same start time), with no thread that will run user code again.
   */
  private onKernelExit(pid: number, kind: "exit" | "dying"): void {
    for (const [id, r] of this.registered) {
      if (r.proc.pid !== pid || r.unregistered || r.exited) continue;
      if (!procExiting(r.proc)) {
        // "dying": one thread of a live process ended (a worker's, a pool's): nothing to report.
        if (kind === "exit")
          this.log.warn(
            { process: id, pid },
            "a group-exit notice for a registered pid that /proc shows running: ignored",
          );
        continue;
      }
      this.log.info({ process: id, pid }, "registered process exited");
      this.announceExit(id, r, `pid ${pid} exiting (kernel exit notice, before its sockets closed)`, true);
    }
  }

  private forget(id: NodeId, r: Registration): void {
    this.registered.delete(id);
    for (const other of this.registered.values()) if (other.proc.pid === r.proc.pid) return;
    this.exitWatch?.unwatch(r.proc.pid);
  }

  /**
   * Tell every member that `id` exited. From the socket close: forget it. From the kernel's notice
   * (`tombstone`): keep it, marked, until its socket closes (see Registration.exited).
   */
  private announceExit(id: NodeId, r: Registration, detail: string, tombstone = false): void {
    if (tombstone) {
      r.exited = true;
      this.exitWatch?.unwatch(r.proc.pid);
    } else this.forget(id, r);
    this.broadcast({
      p: "agent",
      t: "exit",
      subject: id,
      host: this.o.host,
      pid: r.proc.pid,
      ...(r.boot ? { boot: r.boot } : {}),
      detail,
    });
  }

  /** The connection ended: wait (briefly) until /proc says the process is gone, then announce it. */
  private confirmExit(id: NodeId, r: Registration, started: number): void {
    if (this.registered.get(id) !== r) return; // re-registered meanwhile
    if (procExiting(r.proc)) {
      const waited = this.clock.now() - started;
      this.log.info({ process: id, pid: r.proc.pid }, "registered process exited");
      this.announceExit(id, r, `pid ${r.proc.pid} exited ${waited.toFixed(1)} ms after its socket closed`);
      return;
    }
    if (this.clock.now() - started >= this.exitConfirmMs) {
      this.log.warn(
        { process: id, pid: r.proc.pid },
        "a registered process closed its agent socket but is still running",
      );
      return;
    }
    // The kernel closes a dying process's sockets just before it becomes a zombie: look again at
    // once for the first few milliseconds, then at a gentler pace.
    const soon = this.clock.now() - started < AGENT_DEFAULTS.exitSpinMs;
    const t = this.clock.setTimer(soon ? 0 : AGENT_DEFAULTS.exitPollMs, () => {
      this.pending.delete(t);
      this.confirmExit(id, r, started);
    });
    this.pending.add(t);
  }

  /** Tell every member we know of; SWIM's list plus anyone we have an address for. */
  private broadcast(notice: AgentNotice, local = true): void {
    const to = new Set<NodeId>(this.cluster.peers());
    for (const m of this.detection?.swim.members() ?? [])
      if (m.status === "alive" || m.status === "suspect") to.add(m.id);
    to.delete(this.id);
    to.delete(notice.subject);
    for (const id of to) {
      try {
        this.cluster.send(id, notice);
      } catch {
        // not reachable by address yet: it will hear through its own detectors
      }
    }
    // The agent's own monitor learns it too (for `faultline status` on the agent).
    if (local) this.detection?.monitor.publish(noticeToReport(notice, this.clock.now(), this.id));
  }
}
