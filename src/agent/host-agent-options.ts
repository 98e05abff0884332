import type { Logger } from "pino";
import type { SwimConfig } from "../membership/swim-types.ts";
import type { Address, NodeId } from "../net/transport.ts";
import type { Clock } from "../runtime/clock.ts";
import type { FencingConfig } from "./lease.ts";
import type { ProcIdentity } from "./proc.ts";

// The host agent's options, constants and bookkeeping types (host-agent.ts holds the agent).

/** How often an agent says again which processes run on its host (notices can be lost) (ms). */
export const AGENT_REANNOUNCE_MS = 10_000;

export const AGENT_DEFAULTS = {
  /** After a registered process's socket closes, how long to wait for its pid to be gone (ms). */
  exitConfirmMs: 200,
  /** How often to look at /proc meanwhile (ms), after the first exitSpinMs of looking at once. */
  exitPollMs: 1,
  exitSpinMs: 5,
} as const;

export interface HostAgentOptions {
  /** The host's name; the agent's cluster id is `agent:<host>`. */
  host: string;
  /** Unix socket local processes register on. */
  socketPath: string;
  clusterKey: Uint8Array;
  /** Where the agent listens for the cluster (TCP). */
  listenHost?: string;
  port?: number;
  /** Cluster members to join through. */
  seeds?: Record<NodeId, Address>;
  swim?: Partial<SwimConfig>;
  clock?: Clock;
  logger?: Logger;
  exitConfirmMs?: number;
  /**
   * Leases and fences (agent/lease.ts): the agent holds a cluster lease from the witnesses and
   * gives its processes leases no longer than what it has left. When its lease ends it SIGKILLs
   * its registered processes and calls `onFenced` (the `agent` command then exits, code 75, for
   * its supervisor to start a new life).
   */
  fencing?: FencingConfig;
  onFenced?: (why: string) => void;
  /**
   * Learn of a registered process's exit from the kernel's taskstats notice (exit-watch.ts), at the
   * start of its exit rather than when its sockets close after its memory is freed (default true;
   * needs Linux, a C compiler and CAP_NET_ADMIN, and falls back to the socket otherwise).
   */
  kernelExitNotices?: boolean;
}

/** Exit code of an agent that fenced itself (its supervisor should start it again). */
export const FENCED_EXIT_CODE = 75;

/** Process lease renewal interval when fencing is off (the answer only says "no lease needed") (ms). */
export const NO_FENCING_RENEW_MS = 5000;

export interface Registration {
  proc: ProcIdentity;
  /** The process's own boot id (its cluster transport's), carried in notices about it. */
  boot: string | undefined;
  since: number;
  unregistered: boolean;
  /** This process holds a lease from this agent (announced as lease-bound). */
  leased: boolean;
  /**
   * Its exit was announced (the kernel's notice came before its socket closed). Kept until the
   * socket closes: messages it wrote before it died may still be waiting to be read, and must not
   * register it again or make its exit look deliberate.
   */
  exited?: boolean;
}

export function agentId(host: string): NodeId {
  return `agent:${host}`;
}
