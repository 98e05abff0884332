import type { ReportEvent } from "../detect/report.ts";
import type { FuseReason, GroupId } from "../fuse/messages.ts";
import type { MemberStatus } from "../membership/messages.ts";
import type { Address, ConnectionEvent, NodeId, TransportStats } from "../net/transport.ts";

/** Messages between `faultline up` (the supervisor) and the `faultline node` processes it runs. */
export type ToSupervisor =
  | { type: "listening"; id: NodeId; address: Address; boot: string }
  | { type: "status"; id: NodeId; at: number; peers: Record<NodeId, PeerStatus>; stats: TransportStats }
  | { type: "connection"; id: NodeId; event: ConnectionEvent }
  /**
   * `mono`: when the node's monitor published it, on CLOCK_MONOTONIC in ms (process.hrtime), which
   * every process on the host shares: a supervisor measuring latency need not count the IPC.
   */
  | { type: "report"; id: NodeId; report: ReportEvent; mono?: number }
  | { type: "admin"; id: NodeId; port: number }
  | { type: "fuse-created"; id: NodeId; group: GroupId; members: NodeId[] }
  | { type: "fuse-create-failed"; id: NodeId; detail: string }
  | { type: "fuse-failed"; id: NodeId; group: GroupId; reason: FuseReason }
  /** A coordination member's Raft view. */
  | {
      type: "coord-status";
      id: NodeId;
      role: string;
      term: number;
      leader?: NodeId;
      revision: number;
      applied: number;
      clientPort: number;
    };

export type ToNode =
  | { type: "peers"; peers: Record<NodeId, Address> }
  /** Create a FUSE group of these members (the node adds itself). */
  | { type: "fuse-create"; members: NodeId[] }
  /** Signal (fail) every FUSE group this node belongs to. */
  | { type: "fuse-signal" };

export interface PeerStatus {
  connection: "connected" | "connecting" | "idle" | "unknown";
  rtt?: number;
  /** Milliseconds since the last pong, when there has been one. */
  sinceMs?: number;
  /** What SWIM membership says of the peer. */
  member?: MemberStatus;
}

/** Tell the supervising `faultline up` (over IPC), or print a JSON line when run on its own. */
export function tellSupervisor(m: ToSupervisor): void {
  if (typeof process.send === "function" && process.connected) {
    process.send(m, undefined, {}, () => {}); // the supervisor may be gone: its disconnect ends us
  } else {
    console.log(JSON.stringify(m));
  }
}

/**
 * Run `stop` once, then exit, on SIGTERM, SIGINT, or — under a supervisor — when the IPC channel
 * closes (the supervisor died, even by SIGKILL: never outlive it). The supervisor's messages
 * (peer tables, FUSE requests) go to `onMessage`.
 */
export function superviseLifecycle(stop: () => Promise<void>, onMessage: (m: ToNode) => void): void {
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    // A stop that hangs must not keep this process alive past its supervisor.
    setTimeout(() => {
      process.stderr.write(`faultline: stopping took more than ${STOP_LIMIT_MS} ms; exiting\n`);
      process.exit(1);
    }, STOP_LIMIT_MS).unref();
    try {
      await stop();
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  if (typeof process.send === "function") {
    process.on("disconnect", shutdown);
    process.on("message", (m: ToNode) => onMessage(m));
    // The supervisor may have died while this process was starting (a host agent builds and tests
    // its exit helper first): its 'disconnect' came before anyone listened.
    if (!process.connected) void shutdown();
  }
}

/** How long `stop` may take once the supervisor is gone or a signal came. */
const STOP_LIMIT_MS = 5000;
