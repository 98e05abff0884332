import type { Address, NodeId } from "../net/transport.ts";
import type { PeerStatus } from "./ipc.ts";

export interface ChildView {
  id: NodeId;
  pid: number | undefined;
  address: Address | undefined;
  state: "starting" | "running" | "paused" | "dead";
  peers: Record<NodeId, PeerStatus> | undefined;
  /** Supervisor time of the last status report. */
  reportedAt: number | undefined;
}

const pad = (s: string, n: number) => (s.length >= n ? s.slice(0, n) : s + " ".repeat(n - s.length));

/** One cell: what `from` sees of `to`. */
export function cell(from: ChildView, to: NodeId, intervalMs: number): string {
  if (from.id === to) return "·";
  if (from.state !== "running") return "";
  const p = from.peers?.[to];
  if (!p) return "?";
  if (p.member && p.member !== "alive") return p.member;
  const silentAfter = Math.max(3 * intervalMs, 1000);
  if (p.sinceMs !== undefined && p.sinceMs > silentAfter) return `silent ${(p.sinceMs / 1000).toFixed(1)}s`;
  if (p.connection !== "connected") return p.connection;
  if (p.rtt !== undefined) return `${p.rtt.toFixed(2)}ms`;
  return "…";
}

export function renderTable(children: ChildView[], intervalMs: number, selected?: NodeId): string[] {
  const ids = children.map((c) => c.id);
  const w = 13;
  const lines = [
    `${pad("  node", 8)}${pad("pid", 9)}${pad("port", 7)}${pad("state", 10)}| ${ids.map((i) => pad(i, w)).join("")}`,
  ];
  for (const c of children) {
    const mark = c.id === selected ? "> " : "  ";
    const row = ids.map((to) => pad(cell(c, to, intervalMs), w)).join("");
    lines.push(
      `${pad(mark + c.id, 8)}${pad(String(c.pid ?? "-"), 9)}${pad(c.address && "port" in c.address ? String(c.address.port) : "-", 7)}${pad(c.state, 10)}| ${row}`,
    );
  }
  return lines;
}
