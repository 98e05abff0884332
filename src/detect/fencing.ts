import type { Logger } from "pino";
import {
  FenceRequestCore,
  type FencingConfig,
  isLeaseMessage,
  LeaseHolderCore,
  type LeaseMessage,
  parseLease,
  type Send,
  WitnessCore,
} from "../agent/lease.ts";
import type { NodeId, Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { silentLogger } from "../runtime/logger.ts";

export interface FencingOptions {
  id: NodeId;
  transport: Transport;
  clock: Clock;
  config: FencingConfig;
  logger?: Logger;
}

export type LeaseEnd = "expired" | "fenced";

/**
 * Runs the lease cores of agent/lease.ts on a Clock and a Transport, for one node: the witness's
 * side (when the node is one of the witnesses), the observer's fence requests, and — on a host
 * agent — the lease it holds. Malformed lease messages are counted and dropped.
 */
export class Fencing {
  malformed = 0;
  private witness: WitnessCore | undefined;
  private readonly requests: FenceRequestCore;
  private readonly waits = new Map<NodeId, { timer: Timer | undefined; onCertain: (at: number) => void }>();
  private holder:
    | {
        core: LeaseHolderCore;
        tick: Timer | undefined;
        expiry: Timer | undefined;
        onEnd: (why: LeaseEnd) => void;
      }
    | undefined;
  private off: (() => void) | undefined;
  private readonly log: Logger;

  constructor(private readonly o: FencingOptions) {
    this.requests = new FenceRequestCore(o.config);
    this.log = (o.logger ?? silentLogger()).child({ component: "fencing", node: o.id });
  }

  get config(): FencingConfig {
    return this.o.config;
  }

  get isWitness(): boolean {
    return this.o.config.witnesses.includes(this.o.id);
  }

  start(): void {
    if (this.isWitness) this.witness = new WitnessCore(this.o.config, this.o.clock.now());
    this.off = this.o.transport.on("message", (from, m) => {
      if (!isLeaseMessage(m)) return;
      const msg = parseLease(m);
      if (!msg) {
        this.malformed++;
        return;
      }
      this.handle(from, msg);
    });
  }

  stop(): void {
    this.off?.();
    for (const w of this.waits.values()) w.timer?.cancel();
    this.waits.clear();
    this.release();
  }

  /**
   * Fence `holder` (a host agent) at a majority of the witnesses, retrying until they answer;
   * `onCertain(at)` runs once the holder and its processes have surely stopped acting. Returns a
   * cancel function (the holder came back).
   */
  fence(holder: NodeId, onCertain: (at: number) => void): () => void {
    const cancel = () => {
      this.waits.get(holder)?.timer?.cancel();
      this.waits.delete(holder);
      this.requests.forget(holder);
    };
    cancel(); // a fresh request, whatever came before
    const w = { timer: undefined as Timer | undefined, onCertain };
    this.waits.set(holder, w);
    const ask = () => {
      const sends = this.requests.request(this.o.clock.now(), holder);
      if (sends.length === 0) return;
      this.send(sends);
      w.timer = this.o.clock.setTimer(this.o.config.leaseMs / 4, ask);
    };
    ask();
    return cancel;
  }

  /** The majority's fences came too far apart: fence again (renewing every witness's fence). */
  private askAgain(holder: NodeId): void {
    const w = this.waits.get(holder);
    if (!w) return;
    this.waits.delete(holder);
    this.fence(holder, w.onCertain);
  }

  private certainLater(holder: NodeId, at: number): void {
    const w = this.waits.get(holder);
    if (!w) return;
    w.timer?.cancel();
    w.timer = this.o.clock.setTimer(Math.max(0, at - this.o.clock.now()), () => {
      this.waits.delete(holder);
      this.requests.forget(holder);
      this.log.info({ holder }, "fence complete: the holder's lease has surely ended");
      w.onCertain(this.o.clock.now());
    });
  }

  /**
   * Hold a cluster lease as epoch `epoch` (a host agent does). `onEnd` runs once if the lease
   * ends — it ran out, or a witness says this epoch is fenced — after it had been held.
   */
  hold(epoch: string, onEnd: (why: LeaseEnd) => void): LeaseHolderCore {
    this.release();
    const core = new LeaseHolderCore(this.o.config, epoch);
    this.holder = { core, tick: undefined, expiry: undefined, onEnd };
    const tick = () => {
      const h = this.holder;
      if (h?.core !== core) return;
      this.send(core.tick(this.o.clock.now()));
      h.tick = this.o.clock.setTimer(core.renewEveryMs, tick);
    };
    tick();
    return core;
  }

  /** Stop holding (the agent is stopping). */
  release(): void {
    this.holder?.tick?.cancel();
    this.holder?.expiry?.cancel();
    this.holder = undefined;
  }

  /** The lease this node holds, if any. */
  get lease(): LeaseHolderCore | undefined {
    return this.holder?.core;
  }

  private armExpiry(): void {
    const h = this.holder;
    if (!h) return;
    h.expiry?.cancel();
    h.expiry = undefined;
    const now = this.o.clock.now();
    // Told it is fenced (even before it ever held: its processes must not stay under it).
    if (h.core.fenced) {
      this.end("fenced");
      return;
    }
    if (!h.core.everHeld()) return;
    if (!h.core.holds(now)) {
      this.end(h.core.fenced ? "fenced" : "expired");
      return;
    }
    h.expiry = this.o.clock.setTimer(h.core.remaining(now), () => this.armExpiry());
  }

  private end(why: LeaseEnd): void {
    const h = this.holder;
    if (!h) return;
    this.release();
    this.log.warn({ why }, "cluster lease ended: fencing this host");
    h.onEnd(why);
  }

  private handle(from: NodeId, msg: LeaseMessage): void {
    const now = this.o.clock.now();
    if (msg.t === "renew" || msg.t === "fence") {
      const reply = this.witness?.receive(now, from, msg);
      if (reply) this.send([reply]);
    } else if (msg.t === "fenced") {
      const done = this.requests.receive(now, from, msg);
      if (done && "again" in done) this.askAgain(done.holder);
      else if (done) this.certainLater(done.holder, done.certainAt);
    } else if (this.holder) {
      this.holder.core.receive(now, from, msg);
      this.armExpiry();
    }
  }

  private send(sends: Send[]): void {
    for (const { to, msg } of sends) {
      // A witness that is also a holder or an observer answers itself without the network.
      if (to === this.o.id) this.handle(to, msg);
      else {
        try {
          this.o.transport.send(to, msg);
        } catch {
          // not reachable by address yet: the next round asks again
        }
      }
    }
  }
}
