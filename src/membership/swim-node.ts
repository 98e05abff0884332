import type { Logger } from "pino";
import type { Address, NodeId, Transport } from "../net/transport.ts";
import { type Clock, setTimerAfterIo, type Timer } from "../runtime/clock.ts";
import { Emitter } from "../runtime/emitter.ts";
import { silentLogger } from "../runtime/logger.ts";
import type { Rng } from "../runtime/rng.ts";
import { isSwim } from "./messages.ts";
import type { ReachRow } from "./reachability.ts";
import { SwimCore } from "./swim-core.ts";
import type { Member, SwimConfig, SwimInput } from "./swim-types.ts";

export interface SwimNodeOptions {
  id: NodeId;
  clock: Clock;
  rng: Rng;
  transport: Transport;
  /** Members to contact on start (by id; a TCP transport must know their addresses). */
  seeds?: readonly NodeId[];
  /** Where this node listens, gossiped so that members can dial it (TCP). */
  address?: Address;
  /** Called when a member with an address is learned (TCP: transport.addPeer). */
  learnAddress?: (id: NodeId, addr: Address) => void;
  config?: Partial<SwimConfig>;
  /** Members known from the start (static bootstrap; see SwimCoreOptions.members). */
  members?: readonly NodeId[];
  /** This node's host and boot, gossiped (see SwimCoreOptions). */
  host?: string;
  boot?: string;
  extension?: (peer: NodeId) => string | undefined;
  logger?: Logger;
}

type SwimEvents = {
  member: [member: Member, prev: Member["status"] | undefined];
  path: [peer: NodeId, direct: boolean, rttMs: number | undefined];
  extension: [peer: NodeId, x: string];
  reach: [row: ReachRow];
};

/** Runs a SwimCore on a Clock and a Transport: the host side of the sans-I/O core. */
export class SwimNode {
  readonly core: SwimCore;
  private readonly timers = new Map<string, Timer>();
  private readonly emitter: Emitter<SwimEvents>;
  private unsubscribe: (() => void) | undefined;
  private running = false;

  constructor(private readonly o: SwimNodeOptions) {
    this.core = new SwimCore(o);
    const log = (o.logger ?? silentLogger()).child({ component: "swim", node: o.id });
    this.emitter = new Emitter((err) => log.error({ err }, "membership listener threw"));
  }

  get id(): NodeId {
    return this.o.id;
  }

  on<K extends keyof SwimEvents>(event: K, fn: (...args: SwimEvents[K]) => void): () => void {
    return this.emitter.on(event, fn);
  }

  members(): Member[] {
    return this.core.memberList();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribe = this.o.transport.on("message", (from, msg) => {
      if (isSwim(msg)) this.step({ type: "message", now: this.o.clock.now(), from, msg });
    });
    this.step({ type: "start", now: this.o.clock.now() });
  }

  /** Announce a graceful leave (members record "left", not a failure), then stop. */
  /** Ping `target` now, outside the probe rotation; an answer is emitted as a direct `path` event. */
  ask(target: NodeId): void {
    this.step({ type: "ask", now: this.o.clock.now(), target });
  }

  leave(): void {
    this.step({ type: "leave", now: this.o.clock.now() });
  }

  stop(): void {
    this.running = false;
    this.unsubscribe?.();
    for (const t of this.timers.values()) t.cancel();
    this.timers.clear();
  }

  private step(input: SwimInput): void {
    if (!this.running) return;
    for (const out of this.core.step(input)) {
      switch (out.type) {
        case "send":
          try {
            this.o.transport.send(out.to, out.msg);
          } catch {
            // Unknown peer (no address yet): the probe simply fails, as a lost packet would.
          }
          break;
        case "set-timer": {
          this.timers.get(out.timer)?.cancel();
          const name = out.timer;
          // A probe's timeout after this process was itself stopped reads the acks that arrived
          // meanwhile first (setTimerAfterIo): a local pause is not a peer's silence.
          this.timers.set(
            name,
            setTimerAfterIo(this.o.clock, out.afterMs, () => {
              this.timers.delete(name);
              this.step({ type: "timer", now: this.o.clock.now(), timer: name });
            }),
          );
          break;
        }
        case "cancel-timer":
          this.timers.get(out.timer)?.cancel();
          this.timers.delete(out.timer);
          break;
        case "path":
          this.emitter.emit("path", out.peer, out.direct, out.rttMs);
          break;
        case "extension":
          this.emitter.emit("extension", out.peer, out.x);
          break;
        case "reach":
          this.emitter.emit("reach", out.row);
          break;
        case "member":
          if (out.member.addr) this.o.learnAddress?.(out.member.id, out.member.addr);
          this.emitter.emit("member", out.member, out.prev);
          break;
      }
    }
  }
}
