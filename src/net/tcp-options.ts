import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Clock } from "../runtime/clock.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../runtime/frame.ts";
import type { Rng } from "../runtime/rng.ts";
import type { OverflowPolicy } from "./send-queue.ts";
import type { Address, NodeId } from "./transport.ts";

/** The TCP transport's options and their defaults. */
export const TCP_DEFAULTS = {
  host: "127.0.0.1",
  port: 0,
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  /** Per-peer send queue bound, in messages and in bytes. */
  maxQueueMessages: 10_000,
  maxQueueBytes: 8 * 1024 * 1024,
  overflow: "drop-oldest" as OverflowPolicy,
  /** Queued messages are coalesced into frames of at most this many payload bytes. */
  maxBatchBytes: 64 * 1024,
  /** Time allowed for connect + HELLO exchange. */
  handshakeTimeoutMs: 3000,
  /** refresh(peer) replaces a peer's connection at most once per this interval (ms). */
  refreshIntervalMs: 1000,
  reconnectInitialMs: 50,
  reconnectMaxMs: 2000,
  /** Inbound sockets that have not finished the handshake; more are refused at once. */
  maxPendingHandshakes: 256,
  /** A misbehaving peer is logged at most once per this interval. */
  badFrameLogIntervalMs: 10_000,
} as const;

export interface TcpTransportOptions {
  id: NodeId;
  /** Shared secret of the cluster (>= 16 bytes); every frame is authenticated with keys derived from it. */
  clusterKey: Uint8Array;
  host?: string;
  port?: number;
  /** Listen on this Unix socket path instead of host:port (a host agent's local socket). */
  path?: string;
  /** Accept connections (default true); a client that only dials out sets false. */
  listen?: boolean;
  /** Known peers and where they listen. More can be added with addPeer, or learned when they connect. */
  peers?: Record<NodeId, Address>;
  /**
   * Dial `peers` at exactly the addresses given, whatever a peer says it listens on when it
   * connects or gossip says later (a relay, proxy or NAT stands in between). Default false.
   */
  pinPeers?: boolean;
  clock?: Clock;
  rng?: Rng;
  logger?: Logger;
  metrics?: Registry;
  maxFrameBytes?: number;
  maxQueueMessages?: number;
  maxQueueBytes?: number;
  overflow?: OverflowPolicy;
  maxBatchBytes?: number;
  handshakeTimeoutMs?: number;
  refreshIntervalMs?: number;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  maxPendingHandshakes?: number;
  badFrameLogIntervalMs?: number;
}
