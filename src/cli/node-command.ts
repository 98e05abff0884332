import type { Command } from "commander";
import { z } from "zod";
import { DetectionNode } from "../detect/detection-node.ts";
import { FuseNode } from "../fuse/fuse-node.ts";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { Address, NodeId } from "../net/transport.ts";
import { realClock } from "../runtime/clock.ts";
import { createLogger } from "../runtime/logger.ts";
import { createRegistry } from "../runtime/metrics.ts";
import { createRng } from "../runtime/rng.ts";
import { PingNode } from "../sim/ping.ts";
import { startAdmin } from "./admin.ts";
import { type PeerStatus, superviseLifecycle, tellSupervisor } from "./ipc.ts";
import {
  addFencingOptions,
  addSwimOptions,
  duration,
  fencingFromOptions,
  fencingOptions,
  logLevel,
  name,
  parseClusterKey,
  port,
  registerWithAgent,
  swimConfig,
  swimOptions,
  validate,
} from "./options.ts";

const NodeOptions = z.object({
  id: name,
  host: z.string().min(1),
  port,
  peers: z.string().optional(),
  interval: duration,
  ...swimOptions,
  ...fencingOptions,
  agentSocket: z.string().optional(),
  adminPort: port.optional(),
  agentId: z.string().optional(),
  logLevel,
});

/** "n2=127.0.0.1:7002,n3=127.0.0.1:7003" -> peer table. */
export function parsePeers(text: string | undefined): Record<NodeId, Address> {
  const out: Record<NodeId, Address> = {};
  if (!text) return out;
  for (const part of text.split(",").filter(Boolean)) {
    const m = /^([^=]+)=(.+):(\d+)$/.exec(part.trim());
    if (!m) throw new Error(`--peers entry "${part}" is not id=host:port`);
    out[m[1]!] = { host: m[2]!, port: Number(m[3]) };
  }
  return out;
}

export function registerNode(program: Command): void {
  addFencingOptions(addSwimOptions(program.command("node")))
    .description("run one faultline node over TCP (what `faultline up` starts five of)")
    .requiredOption("--id <id>", "this node's id")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0: any free port)", "0")
    .option(
      "--peers <list>",
      "peers as id=host:port,id=host:port (used as given, also when gossip says otherwise: a proxy or NAT may stand in between)",
    )
    .option("--interval <time>", "ping interval (the RTT view)", "250ms")
    .option("--admin-port <port>", "serve /status, /watch and /metrics on 127.0.0.1 at this port (0: any)")
    .option("--agent-socket <path>", "register with the host agent listening on this Unix socket")
    .option("--agent-id <id>", "the host agent's id (agent:<host>)")
    .option("--log-level <level>", "log level (logs go to stderr)", "warn")
    .addHelpText("after", "\nThe cluster key comes from FAULTLINE_CLUSTER_KEY (hex, the same on every node).")
    .action(async (raw) => {
      const o = validate(NodeOptions, raw, "node options");
      await runNode({ ...o, key: parseClusterKey(process.env.FAULTLINE_CLUSTER_KEY) });
    });
}

async function runNode(o: z.output<typeof NodeOptions> & { key: Buffer }): Promise<void> {
  const logger = createLogger({ level: o.logLevel, name: o.id, fd: 2 });
  const peers = parsePeers(o.peers);
  const registry = createRegistry();
  const fencing = fencingFromOptions(o);
  const transport = new TcpTransport({
    id: o.id,
    clusterKey: o.key,
    host: o.host,
    port: o.port,
    peers,
    // As given: a proxy or NAT may stand in between.
    pinPeers: true,
    logger,
    metrics: registry,
  });
  const tell = tellSupervisor;
  await transport.start();
  const agent = await registerWithAgent(o, transport.boot, logger);
  const rng = createRng((Math.random() * 2 ** 32) >>> 0);
  let ping: PingNode | undefined;
  let detection: DetectionNode | undefined;
  let fuse: FuseNode | undefined;
  let admin: { port: number; close(): Promise<void> } | undefined;
  const startWork = (ids: NodeId[]) => {
    if (!detection) {
      detection = new DetectionNode({
        id: o.id,
        clock: realClock,
        rng: rng.fork("swim"),
        transport,
        seeds: ids,
        address: transport.address(),
        boot: transport.boot,
        ...(o.agentId ? { host: o.agentId.replace(/^agent:/, "") } : {}),
        // Gossip fills in the members --peers does not name (those are pinned).
        learnAddress: (id, addr) => transport.addPeer(id, addr),
        swim: swimConfig(o),
        ...(fencing ? { fencing } : {}),
        extension: (peer) => fuse?.digest(peer),
        logger,
      });
      fuse = new FuseNode({ id: o.id, boot: transport.boot, transport, clock: realClock, detection, logger });
      fuse.onFailure((n) => tell({ type: "fuse-failed", id: o.id, group: n.group, reason: n.reason }));
      detection.monitor.subscribe({}, (report) =>
        // real-io: the publication's moment on the host's monotonic clock
        tell({ type: "report", id: o.id, report, mono: Number(process.hrtime.bigint()) / 1e6 }),
      );
      detection.start();
      fuse.start();
      if (o.adminPort !== undefined) {
        const node = detection;
        void startAdmin({ node, registry, host: "127.0.0.1", port: o.adminPort }).then((a) => {
          admin = a;
          tell({ type: "admin", id: o.id, port: a.port });
        });
      }
    }
    ping?.stop();
    // Every peer every interval: the live view then shows each path's RTT at the same freshness.
    ping = new PingNode(
      { id: o.id, peers: ids, clock: realClock, rng, transport },
      { intervalMs: o.interval, burst: ids.length },
    );
    ping.start();
  };
  transport.on("connection", (event) => tell({ type: "connection", id: o.id, event }));
  tell({ type: "listening", id: o.id, address: transport.address(), boot: transport.boot });
  if (Object.keys(peers).length > 0) startWork(Object.keys(peers));

  const status = setInterval(() => {
    const now = realClock.now();
    const view: Record<NodeId, PeerStatus> = {};
    for (const [peer, v] of ping?.view ?? []) {
      const s: PeerStatus = { connection: transport.peerState(peer) };
      if (v.rtt !== undefined) s.rtt = v.rtt;
      if (v.lastPong !== undefined) s.sinceMs = now - v.lastPong;
      const member = detection?.swim.core.member(peer);
      if (member) s.member = member.status;
      view[peer] = s;
    }
    tell({ type: "status", id: o.id, at: now, peers: view, stats: transport.stats() });
  }, 250);

  superviseLifecycle(
    async () => {
      clearInterval(status);
      ping?.stop();
      fuse?.stop();
      detection?.stop();
      await admin?.close();
      await agent?.stop();
      await transport.stop();
    },
    (m) => {
      if (m.type === "peers") {
        for (const [id, addr] of Object.entries(m.peers)) if (id !== o.id) transport.addPeer(id, addr);
        startWork(Object.keys(m.peers).filter((id) => id !== o.id));
      } else if (m.type === "fuse-create") {
        fuse?.createWith(m.members, (err, group) => {
          if (err) tell({ type: "fuse-create-failed", id: o.id, detail: err.message });
          else tell({ type: "fuse-created", id: o.id, group, members: fuse?.core.members(group) ?? [] });
        });
      } else if (m.type === "fuse-signal") {
        for (const g of fuse?.core.activeGroups() ?? []) fuse?.signal(g, { by: "faultline up" });
      }
    },
  );
}
