import { createServer, type Server } from "node:net";
import { join } from "node:path";
import type { NodeId } from "../net/transport.ts";
import type { ToSupervisor } from "./ipc.ts";

/** What a coordination member last told `faultline up` of its Raft view, and when. */
export type CoordStatus = Omit<Extract<ToSupervisor, { type: "coord-status" }>, "type" | "id"> & {
  at: number;
};

/** `n` free TCP ports on 127.0.0.1 (a coordination cluster needs every member's ports at start). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  // A port closed here may come back from the next call before its new owner has bound it (two
  // clusters started one after the other): never hand the same port out twice.
  if (ports.some((p) => handedOut.has(p))) return freePorts(n);
  for (const p of ports) handedOut.add(p);
  return ports;
}

const handedOut = new Set<number>();

/** The `--peers` list of a coordination cluster of `ids` on the given Raft and client ports. */
export function coordPeers(ids: readonly NodeId[], raftPorts: number[], clientPorts: number[]): string {
  return ids.map((id, i) => `${id}=127.0.0.1:${raftPorts[i]}:${clientPorts[i]}`).join(",");
}

export function coordArgs(id: NodeId, peers: string, dir: string, socket: string, agentId: string): string[] {
  return [
    ...["coord", "--id", id, "--peers", peers, "--data", join(dir, id), "--durability", "sync"],
    ...["--agent-socket", socket, "--agent-id", agentId, "--log-level", "error"],
    ...["--probe-interval", "200ms", "--probe-timeout", "100ms", "--suspicion-mult", "3"],
  ];
}

/** The coordination panel: each member's role, term, revision, and how to reach the cluster. */
export function coordLines(
  ids: readonly NodeId[],
  states: ReadonlyMap<NodeId, string>,
  status: ReadonlyMap<NodeId, CoordStatus>,
  now: number,
): string[] {
  if (ids.length === 0) return [];
  const lines = ids.map((id) => {
    const s = status.get(id);
    const state = states.get(id) ?? "starting";
    if (state === "dead") return `  ${id}  dead`;
    if (state === "paused") return `  ${id}  paused (SIGSTOP)`;
    if (!s) return `  ${id}  ${state}`;
    const stale = now - s.at > 1000 ? "  (silent)" : "";
    return `  ${id}  ${s.role.padEnd(13)} term ${String(s.term).padEnd(4)} revision ${String(s.revision).padEnd(6)} applied ${s.applied}${stale}`;
  });
  const ports = ids.map((id) => status.get(id)?.clientPort).filter((p): p is number => p !== undefined);
  const endpoints = ports.map((p) => `127.0.0.1:${p}`).join(",");
  return [
    ...lines,
    ports.length ? `  try: etcdctl --endpoints=${endpoints} put greeting hello` : "  (starting)",
  ];
}
