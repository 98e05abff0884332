import type { Command } from "commander";
import { z } from "zod";
import { CoordNode, type CoordPeer } from "../coord/node.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { createLogger } from "../runtime/logger.ts";
import { superviseLifecycle, tellSupervisor } from "./ipc.ts";
import {
  addSwimOptions,
  duration,
  logLevel,
  name,
  parseClusterKey,
  port,
  swimConfig,
  swimOptions,
  validate,
} from "./options.ts";

export type { CoordPeer };

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
  busyPoll: duration,
  ...swimOptions,
  agentSocket: z.string().optional(),
  agentId: z.string().optional(),
  logLevel,
});

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
    .option(
      "--busy-poll <time>",
      "poll the sockets instead of sleeping for up to this long when messages are due (a leader's writes waiting, a follower's appends flowing; 0: never): lower latency for a core per member while writes flow",
      "0",
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
  if (!members.some((m) => m.id === o.id))
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
  if (o.agentSocket && !o.agentId)
    throw new FaultlineError(ErrorCode.BadConfig, "--agent-socket needs --agent-id (agent:<host>) too");
  const node = await CoordNode.start({
    id: o.id,
    members,
    clusterKey: o.key,
    host: o.host,
    durability: o.durability,
    ...(o.data ? { data: o.data } : {}),
    port: o.port,
    clientPort: o.clientPort,
    heartbeatMs: o.heartbeat,
    electionTimeoutMs: o.electionTimeout,
    commitOffLoop: o.commitOffLoop,
    snapshotCount: o.snapshotCount,
    busyPollMs: o.busyPoll,
    swim: swimConfig(o),
    ...(o.agentSocket && o.agentId ? { agent: { socket: o.agentSocket, id: o.agentId } } : {}),
    ...(o.agentId ? { swimHost: o.agentId.replace(/^agent:/, "") } : {}),
    logger,
  });
  const { member, clientPort } = node;
  tellSupervisor({
    type: "listening",
    id: o.id,
    address: node.transport.address(),
    boot: node.transport.boot,
  });
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
      await node.stop();
    },
    () => {},
  );
}
