import type { Logger } from "pino";
import type { FencingConfig } from "../agent/lease.ts";
import type { ReachRow } from "../membership/reachability.ts";
import { SwimNode } from "../membership/swim-node.ts";
import { SWIM_DEFAULTS, type SwimConfig } from "../membership/swim-types.ts";
import type { Address, NodeId, Transport } from "../net/transport.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Rng } from "../runtime/rng.ts";
import { AgentDetector } from "./agent-detector.ts";
import type { Detector } from "./detector.ts";
import { Fencing } from "./fencing.ts";
import { MembershipDetector } from "./membership-detector.ts";
import { Monitor } from "./monitor.ts";
import { PathDetector, type PathOptions } from "./path-detector.ts";

export interface DetectionNodeOptions {
  id: NodeId;
  clock: Clock;
  rng: Rng;
  transport: Transport;
  seeds?: readonly NodeId[];
  address?: Address;
  learnAddress?: (id: NodeId, addr: Address) => void;
  swim?: Partial<SwimConfig>;
  /** Thresholds of the path detector (route failure, instability, corruption). */
  paths?: PathOptions;
  /** Members known from the start (static bootstrap for large simulations). */
  members?: readonly NodeId[];
  /** This node's host (members of one host fail together) and boot (which life a report names). */
  host?: string;
  boot?: string;
  /** A payload other protocols ride on SWIM's probes to a peer (see SwimCoreOptions.extension). */
  extension?: (peer: NodeId) => string | undefined;
  /** Leases and fences (see agent/lease.ts): with them, a host crash can become certain. */
  fencing?: FencingConfig;
  logger?: Logger;
}

/**
 * What runs on every faultline node for detection: SWIM membership, the detectors that turn its
 * verdicts and the transport's evidence into typed reports, and the Monitor applications read.
 */
export class DetectionNode {
  readonly swim: SwimNode;
  readonly monitor: Monitor;
  readonly fencing: Fencing | undefined;
  private readonly detectors: Detector[];

  constructor(o: DetectionNodeOptions) {
    this.monitor = new Monitor(o.logger);
    this.swim = new SwimNode({ ...o, config: o.swim });
    const agents = new AgentDetector({
      id: o.id,
      transport: o.transport,
      monitor: this.monitor,
      clock: o.clock,
    });
    if (o.fencing) {
      this.fencing = new Fencing({
        id: o.id,
        transport: o.transport,
        clock: o.clock,
        config: o.fencing,
        ...(o.logger ? { logger: o.logger } : {}),
      });
    }
    this.detectors = [
      new MembershipDetector({
        swim: this.swim,
        transport: o.transport,
        monitor: this.monitor,
        clock: o.clock,
        correlationMs: 2 * (o.swim?.probeIntervalMs ?? SWIM_DEFAULTS.probeIntervalMs),
        recheckMs: 2 * (o.swim?.probeTimeoutMs ?? SWIM_DEFAULTS.probeTimeoutMs),
        ...(this.fencing
          ? {
              fencing: this.fencing,
              leaseBound: (s: NodeId, b: string | undefined) => agents.leaseBound(s, b),
            }
          : {}),
      }),
      agents,
      new PathDetector(
        { id: o.id, swim: this.swim, transport: o.transport, monitor: this.monitor, clock: o.clock },
        o.paths ?? {},
      ),
    ];
  }

  get id(): NodeId {
    return this.swim.id;
  }

  /**
   * The reachability matrix as this node holds it: for each member that has said so (this node
   * included), the members it cannot reach directly. Empty when every path works.
   */
  reachability(): ReachRow[] {
    return this.swim.core.reach.matrix();
  }

  start(): void {
    this.fencing?.start();
    for (const d of this.detectors) d.start();
    this.swim.start();
  }

  stop(): void {
    this.swim.stop();
    for (const d of this.detectors) d.stop();
    this.fencing?.stop();
  }
}
