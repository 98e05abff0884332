import type { NodeId } from "../net/transport.ts";

/** What a local process tells its host agent (over the agent's Unix socket). */
export type LocalMessage =
  | { p: "agent"; t: "register"; pid: number; boot?: string }
  | { p: "agent"; t: "unregister" }
  /** Renew this process's lease (request `seq`). */
  | { p: "agent"; t: "renew"; seq: number };

/**
 * The agent's answer to a renewal: the lease lasts `ms` from when the request was sent (0: none
 * now — the agent holds no cluster lease); `ms: null` when fencing is off on this host (nothing
 * to enforce). Renew every `everyMs`.
 */
export type LeaseGrant = { p: "agent"; t: "lease"; seq: number; ms: number | null; everyMs: number };

/** The agent's answer to `unregister`: the process's exit from now on is deliberate, not a failure. */
export type UnregisterAck = { p: "agent"; t: "unregistered" };

export function isUnregisterAck(m: unknown): boolean {
  const x = m as Partial<UnregisterAck>;
  return typeof m === "object" && m !== null && x.p === "agent" && x.t === "unregistered";
}

export function parseGrant(m: unknown): LeaseGrant | undefined {
  const x = m as Partial<LeaseGrant>;
  if (typeof m !== "object" || m === null || x.p !== "agent" || x.t !== "lease") return undefined;
  if (!Number.isSafeInteger(x.seq) || !(typeof x.everyMs === "number" && x.everyMs > 0)) return undefined;
  if (x.ms !== null && !(typeof x.ms === "number" && x.ms >= 0)) return undefined;
  return x as LeaseGrant;
}

/** What a host agent tells the cluster. */
export type AgentNotice =
  /** The agent saw `subject` (pid on its host) exit: certain. */
  | { p: "agent"; t: "exit"; subject: NodeId; host: string; pid: number; detail: string; boot?: string }
  /**
   * `subject` registered (again) on the agent's host. `leased`: this life of it holds a lease (a
   * process lease from the agent; the agent itself, a cluster lease), so it stops acting when the
   * lease ends — what lets a fence make a host crash certain.
   */
  | { p: "agent"; t: "up"; subject: NodeId; host: string; pid: number; boot?: string; leased?: boolean };

const isId = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;
const isPid = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

export function parseLocal(m: unknown): LocalMessage | undefined {
  const x = m as Partial<LocalMessage> & { pid?: unknown };
  if (typeof m !== "object" || m === null || x.p !== "agent") return undefined;
  const boot = (m as { boot?: unknown }).boot;
  if (boot !== undefined && (typeof boot !== "string" || boot.length > 64)) return undefined;
  if (x.t === "register" && isPid(x.pid))
    return { p: "agent", t: "register", pid: x.pid, ...(boot ? { boot } : {}) };
  if (x.t === "unregister") return { p: "agent", t: "unregister" };
  const seq = (m as { seq?: unknown }).seq;
  if (x.t === "renew" && Number.isSafeInteger(seq)) return { p: "agent", t: "renew", seq: seq as number };
  return undefined;
}

export function parseNotice(m: unknown): AgentNotice | undefined {
  const x = m as Partial<AgentNotice> & { detail?: unknown };
  if (typeof m !== "object" || m === null || x.p !== "agent") return undefined;
  if (!isId(x.subject) || !isId(x.host) || !isPid(x.pid)) return undefined;
  if (x.boot !== undefined && (typeof x.boot !== "string" || x.boot.length > 64)) return undefined;
  if (x.t === "exit" && typeof x.detail === "string" && x.detail.length <= 1024) return x as AgentNotice;
  if (x.t === "up" && (x.leased === undefined || typeof x.leased === "boolean")) return x as AgentNotice;
  return undefined;
}

export function isAgentMessage(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "agent";
}
