import type { Service } from "../runtime/lifecycle.ts";

export type NodeId = string;

/** Where a node listens: a TCP host and port, or (for a host agent's local socket) a Unix socket path. */
export type Address = { host: string; port: number } | { path: string };

/** Whether `a` is a well-formed Address (validates untrusted input: handshakes, gossip). */
export function isAddress(a: unknown): a is Address {
  if (typeof a !== "object" || a === null) return false;
  const x = a as { host?: unknown; port?: unknown; path?: unknown };
  if (typeof x.path === "string") return x.path.length > 0 && x.path.length <= 1024;
  return (
    typeof x.host === "string" &&
    Number.isInteger(x.port) &&
    (x.port as number) >= 0 &&
    (x.port as number) <= 65535
  );
}

export function formatAddress(a: Address): string {
  return "path" in a ? a.path : `${a.host}:${a.port}`;
}

/**
 * Connection-level evidence a transport observes. Detectors use these: "refused" from a host that
 * answers means nothing listens there; "reset" and "closed" mean an established path ended.
 */
export type ConnectionEventKind =
  | "connected" // a connection to the peer is established and authenticated
  | "closed" // an established connection ended in an orderly way (FIN) or was closed by us
  | "reset" // an established connection was reset (RST, EPIPE)
  | "refused" // a connection attempt was refused (nothing listens at the peer's address)
  | "timeout" // a connection attempt or an established connection timed out
  | "unreachable"; // the network said the peer's host or network is unreachable

export interface ConnectionEvent {
  peer: NodeId;
  kind: ConnectionEventKind;
  /** Monotonic time (the transport's clock) when it was observed. */
  at: number;
  /** The OS error code behind it, when there was one (ECONNREFUSED, ECONNRESET, ...). */
  code?: string;
  /** The peer's boot id (changes when the peer process restarts), on "connected". */
  boot?: string;
}

export type DropReason = "queue-overflow" | "not-connected" | "stopped" | "dest-down" | "link-down" | "loss";

export interface TransportStats {
  sent: number;
  received: number;
  bytesSent: number;
  bytesReceived: number;
  /** Frames rejected by the frame check, by reason ("peer-closed": the peer rejected one of ours). */
  badFrames: Record<string, number>;
  /** Messages dropped locally, by reason. */
  dropped: Record<string, number>;
  openConnections: number;
  /** Fresh connections dialed to replace a stalled one (see Transport.refresh). */
  refreshes: number;
}

/** A frame from a known peer failed its integrity check (it was dropped). */
export interface IntegrityEvent {
  peer: NodeId;
  reason: string;
  at: number;
}

export interface TransportEvents extends Record<string, unknown[]> {
  message: [from: NodeId, message: unknown];
  connection: [event: ConnectionEvent];
  integrity: [event: IntegrityEvent];
}

/**
 * Moves messages between nodes. Delivery is best effort: at most once, in order per peer while a
 * connection lasts; reliability is built above (durable channels). `send` never blocks and never
 * buffers without bound: a full per-peer queue drops by the configured policy and counts it.
 */
export interface Transport extends Service {
  readonly id: NodeId;
  /** Queue `message` (any MessagePack-encodable value) for `to`. Returns false if it was dropped at once. */
  send(to: NodeId, message: unknown): boolean;
  on<K extends keyof TransportEvents>(event: K, fn: (...args: TransportEvents[K]) => void): () => void;
  /** Peers this transport knows an address (or a route) for. */
  peers(): NodeId[];
  /**
   * A hint that the connection to `to` may have stalled: the peer answered through a relay while
   * direct probes went unanswered. A stream transport may replace the connection with a fresh
   * one — after a short outage TCP's retransmission backoff can keep a connection silent for as
   * long again (a retransmission 3 s after a 1.5 s loss), and a new connection carries none.
   * Optional; where connections cannot stall, absent.
   */
  refresh?(to: NodeId): void;
  stats(): TransportStats;
}
