import type { Logger } from "pino";
import type { Clock } from "../runtime/clock.ts";
import { decode, encode } from "../runtime/codec.ts";
import { Emitter } from "../runtime/emitter.ts";
import { ErrorCode, FaultlineError, FrameError } from "../runtime/errors.ts";
import { DEFAULT_MAX_FRAME_BYTES, FrameType, openFrame, sealFrame } from "../runtime/frame.ts";
import { silentLogger } from "../runtime/logger.ts";
import { MacKey } from "../runtime/mac.ts";
import type { EndpointSink, Gate, SimNetwork } from "./sim-network.ts";
import { OPEN_GATE } from "./sim-network.ts";
import type { NodeId, Transport, TransportEvents, TransportStats } from "./transport.ts";
import { bump, emptyStats } from "./transport-metrics.ts";

export interface SimTransportOptions {
  id: NodeId;
  network: SimNetwork;
  clusterKey: Uint8Array;
  /** The node's gate (crash/pause); the simulator supplies one, standalone use gets an open gate. */
  gate?: Gate;
  /** Clock used to time-stamp connection events (the node's clock). */
  clock?: Clock;
  logger?: Logger;
  maxFrameBytes?: number;
}

/**
 * The simulated transport: the same Transport contract as TCP, over SimNetwork. Each message travels
 * as one authenticated Datagram frame, so corruption on a link is caught by the same frame check.
 */
export class SimTransport implements Transport {
  readonly id: NodeId;
  private readonly emitter: Emitter<TransportEvents>;
  private readonly counters: TransportStats = emptyStats();
  private readonly sink: EndpointSink;
  private readonly network: SimNetwork;
  private readonly key: MacKey;
  private readonly clock: Clock;
  private readonly maxFrame: number;
  private running = false;

  constructor(options: SimTransportOptions) {
    this.id = options.id;
    this.network = options.network;
    this.key = new MacKey(options.clusterKey);
    this.clock = options.clock ?? options.network.clock;
    this.maxFrame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    const log = (options.logger ?? silentLogger()).child({ component: "sim-transport", node: options.id });
    this.emitter = new Emitter<TransportEvents>((err, event) => log.error({ err, event }, "listener threw"));
    this.sink = {
      gate: options.gate ?? OPEN_GATE,
      frame: (from, bytes) => this.receive(from, bytes),
      refused: (to) => this.emitter.emit("connection", { peer: to, kind: "refused", at: this.clock.now() }),
    };
    // Attached at construction so that a node is addressable as soon as it exists.
    this.network.attach(this.id, this.sink);
  }

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.network.detach(this.id, this.sink);
    this.emitter.clear();
  }

  on<K extends keyof TransportEvents>(event: K, fn: (...args: TransportEvents[K]) => void): () => void {
    return this.emitter.on(event, fn);
  }

  peers(): NodeId[] {
    return this.network.nodes().filter((n) => n !== this.id);
  }

  send(to: NodeId, message: unknown): boolean {
    if (!this.network.has(to)) {
      throw new FaultlineError(
        ErrorCode.UnknownPeer,
        `no simulated node "${to}": create it before sending to it`,
      );
    }
    if (!this.running) {
      bump(this.counters.dropped, "stopped");
      return false;
    }
    const frame = sealFrame(FrameType.Datagram, encode(message), this.key);
    this.counters.sent++;
    this.counters.bytesSent += frame.length;
    this.network.transmit(this.id, to, frame);
    return true;
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      badFrames: { ...this.counters.badFrames },
      dropped: { ...this.counters.dropped },
    };
  }

  private receive(from: NodeId, bytes: Uint8Array): void {
    if (!this.running) return;
    let msg: unknown;
    try {
      const f = openFrame(bytes, this.key, this.maxFrame);
      if (f.type !== FrameType.Datagram) throw new FrameError("bad-type", `unexpected frame type ${f.type}`);
      msg = decode(f.payload);
    } catch (e) {
      const reason = e instanceof FrameError ? e.reason : "bad-payload";
      bump(this.counters.badFrames, reason);
      if (reason !== "bad-payload")
        this.emitter.emit("integrity", { peer: from, reason, at: this.clock.now() });
      return;
    }
    this.counters.received++;
    this.counters.bytesReceived += bytes.length;
    this.emitter.emit("message", from, msg);
  }
}
