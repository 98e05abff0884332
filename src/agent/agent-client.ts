import type { Logger } from "pino";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { NodeId } from "../net/transport.ts";
import { type Clock, realClock, type Timer } from "../runtime/clock.ts";
import { silentLogger } from "../runtime/logger.ts";
import { FENCED_EXIT_CODE } from "./host-agent-options.ts";
import { isUnregisterAck, type LocalMessage, parseGrant } from "./messages.ts";

/** How long stop() waits for the agent to acknowledge the unregister before closing anyway. */
const UNREGISTER_ACK_MS = 2000;

export interface AgentClientOptions {
  /** This process's cluster id (what peers will see reported). */
  id: NodeId;
  /** The host agent's id (`agent:<host>`) and Unix socket path. */
  agentId: NodeId;
  socketPath: string;
  clusterKey: Uint8Array;
  /** Defaults to this process's pid. */
  pid?: number;
  /** The process's boot id (its cluster transport's `boot`), echoed in the agent's notices. */
  boot?: string;
  logger?: Logger;
  clock?: Clock;
  /**
   * Called once when this process's lease from its agent ends (only on a host with fencing on, and
   * only after a lease was first granted): the process must stop acting at once. The default
   * logs and exits with code 75. Check `holdsLease()` before acting, too: a stopped process runs
   * again before its timers do.
   */
  onFence?: (why: string) => void;
}

/**
 * A process's registration with its host agent: an authenticated connection on the agent's Unix
 * socket, held open for the life of the process. The kernel closes it when the process dies, however
 * it dies, and that is what lets the agent report the exit at once. Reconnects (and registers
 * again) if the agent restarts.
 */
export class AgentClient {
  private readonly transport: TcpTransport;
  private readonly clock: Clock;
  private seq = 0;
  private readonly sent = new Map<number, number>();
  /** Until when the lease runs (undefined: never granted; null: fencing is off here). */
  private until: number | undefined | null;
  /** Renewal interval, as the agent last said (it knows the lease length). */
  private everyMs = 250;
  private renewTimer: Timer | undefined;
  private expiryTimer: Timer | undefined;
  private fenced = false;
  private stopped = false;
  /** Set while stop() waits for the agent to acknowledge the unregister. */
  private onUnregistered: ((acked: boolean) => void) | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly o: AgentClientOptions) {
    this.clock = o.clock ?? realClock;
    this.transport = new TcpTransport({
      id: o.id,
      clusterKey: o.clusterKey,
      listen: false,
      reconnectMaxMs: 500,
      ...(o.logger ? { logger: o.logger } : {}),
    });
  }

  async start(): Promise<void> {
    await this.transport.start();
    this.transport.on("connection", (e) => {
      if (e.peer !== this.o.agentId) return;
      if (e.kind === "connected") {
        if (this.stopped) return; // leaving: not registering again
        this.register();
        this.renew();
      } else this.onUnregistered?.(false); // the connection is gone: no acknowledgement will come
    });
    this.transport.on("message", (from, m) => {
      if (from !== this.o.agentId) return;
      if (isUnregisterAck(m)) {
        this.onUnregistered?.(true);
        return;
      }
      const g = parseGrant(m);
      if (g) this.onGrant(g.seq, g.ms, g.everyMs);
    });
    this.transport.addPeer(this.o.agentId, { path: this.o.socketPath }, { connect: true });
  }

  /** Whether the registration connection is up. */
  connected(): boolean {
    return this.transport.peerState(this.o.agentId) === "connected";
  }

  /**
   * Whether this process may act now: its lease from its agent runs (always, where fencing is
   * off). Before the first grant it is not yet bound by a lease, and not counted as fenced.
   */
  holdsLease(): boolean {
    if (this.fenced) return false;
    if (this.until === null || this.until === undefined) return true;
    return this.clock.now() < this.until;
  }

  /** Whether a lease binds this process (its agent has fencing on and granted one). */
  leaseBound(): boolean {
    return typeof this.until === "number";
  }

  private renew(): void {
    this.renewTimer?.cancel();
    if (this.stopped || this.fenced) return;
    const seq = ++this.seq;
    this.sent.set(seq, this.clock.now());
    if (this.sent.size > 64) this.sent.delete(this.sent.keys().next().value as number);
    if (this.connected())
      this.transport.send(this.o.agentId, { p: "agent", t: "renew", seq } as LocalMessage);
    this.renewTimer = this.clock.setTimer(this.everyMs, () => this.renew());
  }

  private onGrant(seq: number, ms: number | null, everyMs: number): void {
    this.everyMs = everyMs;
    const sentAt = this.sent.get(seq);
    if (sentAt === undefined) return;
    this.sent.delete(seq);
    if (ms === null) {
      if (this.until === undefined) this.until = null;
      return;
    }
    if (ms <= 0) return;
    // Measured from when the request left: the agent's clock is not compared with ours.
    this.until = Math.max(typeof this.until === "number" ? this.until : 0, sentAt + ms);
    this.armExpiry();
  }

  private armExpiry(): void {
    this.expiryTimer?.cancel();
    if (typeof this.until !== "number" || this.stopped) return;
    const left = this.until - this.clock.now();
    if (left > 0) {
      this.expiryTimer = this.clock.setTimer(left, () => this.armExpiry());
      return;
    }
    this.fenced = true;
    this.renewTimer?.cancel();
    const why = `lease from ${this.o.agentId} ended`;
    if (this.o.onFence) this.o.onFence(why);
    else {
      (this.o.logger ?? silentLogger()).error({ why }, "fenced: this process stops now");
      process.exit(FENCED_EXIT_CODE);
    }
  }

  /** Deregister (a deliberate exit is not a failure) and close. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopped = true;
    this.renewTimer?.cancel();
    this.expiryTimer?.cancel();
    if (this.connected()) {
      // Close only once the agent has acknowledged: closing first could let the agent see the
      // connection end before the unregister and report a deliberate exit as a failure.
      const acked = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), UNREGISTER_ACK_MS); // real-io: bound the wait
        this.onUnregistered = (ok) => {
          clearTimeout(t);
          resolve(ok);
        };
      });
      this.transport.send(this.o.agentId, { p: "agent", t: "unregister" } satisfies LocalMessage);
      if (!(await acked))
        (this.o.logger ?? silentLogger()).warn(
          { agent: this.o.agentId, waitedMs: UNREGISTER_ACK_MS },
          "the host agent did not acknowledge the unregister: it may report this exit as a failure",
        );
      this.onUnregistered = undefined;
    }
    await this.transport.stop();
  }

  private register(): void {
    const m: LocalMessage = {
      p: "agent",
      t: "register",
      pid: this.o.pid ?? process.pid,
      ...(this.o.boot ? { boot: this.o.boot } : {}),
    };
    this.transport.send(this.o.agentId, m);
  }
}
