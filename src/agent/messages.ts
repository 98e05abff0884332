import type { NodeId } from "../net/transport.ts";

/** What a local process tells its host agent (over the agent's Unix socket). */
export type LocalMessage =
  | { p: "agent"; t: "register"; pid: number; boot?: string }
  | { p: "agent"; t: "unregister" };

/** What a host agent tells the cluster. */
export type AgentNotice =
  /** The agent saw `subject` (pid on its host) exit: certain. */
  | { p: "agent"; t: "exit"; subject: NodeId; host: string; pid: number; detail: string; boot?: string }
  /** `subject` registered (again) on the agent's host. */
  | { p: "agent"; t: "up"; subject: NodeId; host: string; pid: number; boot?: string };

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
  return undefined;
}

export function parseNotice(m: unknown): AgentNotice | undefined {
  const x = m as Partial<AgentNotice> & { detail?: unknown };
  if (typeof m !== "object" || m === null || x.p !== "agent") return undefined;
  if (!isId(x.subject) || !isId(x.host) || !isPid(x.pid)) return undefined;
  if (x.boot !== undefined && (typeof x.boot !== "string" || x.boot.length > 64)) return undefined;
  if (x.t === "exit" && typeof x.detail === "string" && x.detail.length <= 1024) return x as AgentNotice;
  if (x.t === "up") return x as AgentNotice;
  return undefined;
}

export function isAgentMessage(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "agent";
}
