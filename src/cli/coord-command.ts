import type { Command } from "commander";
import { z } from "zod";
import { CoordGrpcServer } from "../coord/grpc-server.ts";
import { CoordMember } from "../coord/member.ts";
import { DetectionNode } from "../detect/detection-node.ts";
import { LmdbStore, VolatileStore } from "../durable/store.ts";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { Address, NodeId } from "../net/transport.ts";
import { realClock } from "../runtime/clock.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { createLogger } from "../runtime/logger.ts";
import { createRng } from "../runtime/rng.ts";
import { superviseLifecycle, tellSupervisor } from "./ipc.ts";
import {
  addSwimOptions,
  duration,
  logLevel,
  name,
  parseClusterKey,
  port,
  registerWithAgent,
  swimConfig,
  swimOptions,
  validate,
} from "./options.ts";

const CoordOptions = z.object({
  id: name,
  host: z.string().min(1),
  port,
  clientPort: port,
  peers: z.string().min(1, "a coordination cluster needs its members: --peers id=host:port:clientPort,..."),
  data: z.string().optional(),
  durability: z.enum(["sync", "memory"]),
  commitOffLoop: z.boolean().default(false),
  snapshotCount: z.coerce
    .number()
    .int("--snapshot-count must be a whole number of writes")
    .min(1, "--snapshot-count must be at least 1"),
  heartbeat: duration,
  electionTimeout: duration,
  ...swimOptions,
  agentSocket: z.string().optional(),
  agentId: z.string().optional(),
  logLevel,
});

export interface CoordPeer {
  id: NodeId;
  raft: Address & { host: string; port: number };
  client: { host: string; port: number };
}

/** "c1=127.0.0.1:7101:2379,c2=..." -> members (this one included). */
export function parseCoordPeers(text: string): CoordPeer[] {
  return text
    .split(",")
    .filter(Boolean)
    .map((part) => {
      const m = /^([^=]+)=(.+):(\d+):(\d+)$/.exec(part.trim());
      if (!m)
        throw new FaultlineError(
          ErrorCode.BadConfig,
          `--peers entry "${part}" is not id=host:raftPort:clientPort`,
        );
      return {
        id: m[1]!,
        raft: { host: m[2]!, port: Number(m[3]) },
        client: { host: m[2]!, port: Number(m[4]) },
      };
    });
}

export function registerCoord(program: Command): void {
  addSwimOptions(program.command("coord"))
    .description("run one member of the coordination service (etcd's v3 API over gRPC)")
    .requiredOption("--id <id>", "this member's id (one of --peers)")
    .requiredOption("--peers <list>", "every member as id=host:raftPort:clientPort, this one included")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "Raft/detection port (default: this member's entry in --peers)", "0")
    .option(
      "--client-port <port>",
      "gRPC port for etcd clients (default: this member's entry in --peers)",
      "0",
    )
    .option("--data <dir>", "LMDB directory for the Raft log (required with --durability sync)")
    .option(
      "--durability <mode>",
      "sync: every write on disk before it is acknowledged; memory: tests only",
      "sync",
    )
    .option(
      "--commit-off-loop",
      "commit the log in LMDB's write thread, not on the event loop: for slow disks and spare cores",
    )
    .option(
      "--snapshot-count <n>",
      "writes between snapshots of the store, after which the log they replace is deleted (etcd's --snapshot-count)",
      "100000",
    )
    .option("--heartbeat <time>", "leader heartbeat interval", "50ms")
    .option(
      "--election-timeout <time>",
      "fallback election timeout, when no detector reports the leader's failure",
      "500ms",
    )
    .option("--agent-socket <path>", "register with the host agent listening on this Unix socket")
    .option("--agent-id <id>", "the host agent's id (agent:<host>)")
    .option("--log-level <level>", "log level (logs go to stderr)", "warn")
    .addHelpText(
      "after",
      "\nThe cluster key comes from FAULTLINE_CLUSTER_KEY (hex, the same on every member).",
    )
    .action(async (raw) => {
      const o = validate(CoordOptions, raw, "coord options");
      await runCoord({ ...o, key: parseClusterKey(process.env.FAULTLINE_CLUSTER_KEY) });
    });
}

async function runCoord(o: z.output<typeof CoordOptions> & { key: Buffer }): Promise<void> {
  const logger = createLogger({ level: o.logLevel, name: o.id, fd: 2 });
  const members = parseCoordPeers(o.peers);
  const me = members.find((m) => m.id === o.id);
  if (!me)
    throw new FaultlineError(
      ErrorCode.BadConfig,
      `--id ${o.id} is not one of --peers (${members.map((m) => m.id).join(", ")})`,
    );
  if (o.durability === "sync" && !o.data) {
    throw new FaultlineError(
      ErrorCode.BadConfig,
      "--durability sync needs --data <dir> (or use --durability memory for tests)",
    );
  }
  const peers: Record<NodeId, Address> = {};
  for (const m of members) if (m.id !== o.id) peers[m.id] = m.raft;
  const transport = new TcpTransport({
    id: o.id,
    clusterKey: o.key,
    host: o.host,
    port: o.port || me.raft.port,
    peers,
    logger,
  });
  await transport.start();
  const agent = await registerWithAgent(o, transport.boot, logger);
  const rng = createRng((Math.random() * 2 ** 32) >>> 0); // real-io: a member's seed
  const detection = new DetectionNode({
    id: o.id,
    clock: realClock,
    rng: rng.fork("swim"),
    transport,
    seeds: Object.keys(peers),
    address: transport.address(),
    boot: transport.boot,
    ...(o.agentId ? { host: o.agentId.replace(/^agent:/, "") } : {}),
    learnAddress: (id, addr) => transport.addPeer(id, addr),
    swim: swimConfig(o),
    logger,
  });
  const store = o.durability === "sync" ? LmdbStore.open(o.data!, "sync") : new VolatileStore();
  const member = new CoordMember({
    id: o.id,
    voters: members.map((m) => m.id),
    transport,
    clock: realClock,
    rng: rng.fork("coord"),
    store,
    raft: { heartbeatMs: o.heartbeat, electionTimeoutMs: o.electionTimeout },
    monitor: detection.monitor,
    commitOffLoop: o.commitOffLoop,
    compactEvery: o.snapshotCount,
    logger,
  });
  const server = new CoordGrpcServer(
    member,
    {
      version: "3.4.0-faultline",
      members: members.map((m) => ({
        id: m.id,
        clientUrl: `http://${m.client.host}:${m.client.port}`,
        peerUrl: `http://${m.raft.host}:${m.raft.port}`,
      })),
    },
    logger,
  );
  const clientPort = await server.listen(`${o.host}:${o.clientPort || me.client.port}`);
  detection.start();
  member.start();
  tellSupervisor({ type: "listening", id: o.id, address: transport.address(), boot: transport.boot });
  logger.info({ clientPort }, "coordination member serving");
  const status =
    typeof process.send === "function"
      ? setInterval(() => {
          const c = member.raft.core;
          tellSupervisor({
            type: "coord-status",
            id: o.id,
            role: c.role,
            term: c.term,
            ...(c.leader ? { leader: c.leader } : {}),
            revision: member.mvcc.revision,
            applied: c.applied,
            clientPort,
          });
        }, 250)
      : undefined;
  superviseLifecycle(
    async () => {
      if (status) clearInterval(status);
      await server.stop();
      member.stop();
      detection.stop();
      await agent?.stop();
      await transport.stop();
      await store.close();
    },
    () => {},
  );
}
