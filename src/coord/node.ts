import type { Logger } from "pino";
import { AgentClient } from "../agent/agent-client.ts";
import { DetectionNode } from "../detect/detection-node.ts";
import { type DurableStore, LmdbStore, VolatileStore } from "../durable/store.ts";
import type { SwimConfig } from "../membership/swim-types.ts";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { Address, NodeId } from "../net/transport.ts";
import { BusyPoller } from "../runtime/busy-poll.ts";
import { realClock } from "../runtime/clock.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import { createRng } from "../runtime/rng.ts";
import { CoordGrpcServer } from "./grpc-server.ts";
import { CoordMember } from "./member.ts";

/** One member of a coordination cluster: where its Raft/detection traffic and its gRPC clients go. */
export interface CoordPeer {
  id: NodeId;
  raft: Address & { host: string; port: number };
  client: { host: string; port: number };
}

export interface CoordNodeOptions {
  /** This member's id: one of `members`. */
  id: NodeId;
  /** Every member of the cluster, this one included (the same list on every member). */
  members: readonly CoordPeer[];
  /** The cluster key (32 bytes, the same on every member): frames are authenticated with it. */
  clusterKey: Buffer;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** sync: every write on disk (LMDB in `data`) before it is acknowledged; memory: tests only. */
  durability: "sync" | "memory";
  data?: string;
  /** Raft/detection port (default, or 0: this member's entry in `members`). */
  port?: number;
  /**
   * Port for etcd's v3 gRPC API (default, or 0: this member's entry in `members`). `false`: no
   * gRPC server — the application in this process uses the member through `CoordMember` alone.
   */
  clientPort?: number | false;
  heartbeatMs?: number;
  /** The fallback election timeout, for what no detector reports. */
  electionTimeoutMs?: number;
  commitOffLoop?: boolean;
  /** Writes between snapshots (etcd's --snapshot-count). */
  snapshotCount?: number;
  swim?: Partial<SwimConfig>;
  /** Register with the host agent on this Unix socket, so that this process's exit is certain at once. */
  agent?: { socket: string; id: string };
  /** The host this member runs on, gossiped by SWIM (default: from the agent's id, `agent:<host>`). */
  swimHost?: string;
  /**
   * Busy-poll — keep the event loop polling the sockets instead of sleeping — for up to this long
   * whenever messages are due (default 0: never): on the leader while a write or a linearizable
   * read waits for the followers, on a follower after each append that carried entries (the next
   * one tends to follow). Each wake-up of a sleeping loop costs tens of microseconds on a VM; with
   * every member polling on a core of its own, a write from the leader's process takes p50 ~90 µs
   * instead of ~185 on this project's test VM (docs/BENCHMARKS.md, "Busy-polling"). It costs a core per member while writes flow: for
   * latency-bound clusters with cores to spare, not for cores shared with the load. See
   * runtime/busy-poll.ts.
   */
  busyPollMs?: number;
  logger?: Logger;
}

/**
 * A coordination member with everything it runs on — its TCP transport, its failure detection
 * (SWIM and the host agent's reports), its store and, unless told not to, the gRPC server that
 * etcd clients talk to. What `faultline coord` runs, for applications that host a member in their
 * own process: they read and write through `member` without a network round trip to it.
 */
export class CoordNode {
  private stopped = false;

  private constructor(
    readonly member: CoordMember,
    readonly transport: TcpTransport,
    readonly detection: DetectionNode,
    private readonly store: DurableStore,
    private readonly agent: AgentClient | undefined,
    /** With `busyPollMs`: what keeps the loop polling while this member's writes wait. */
    readonly poller: BusyPoller | undefined,
    readonly server: CoordGrpcServer | undefined,
    /** The gRPC port clients connect to (0 without a server). */
    readonly clientPort: number,
  ) {}

  static async start(o: CoordNodeOptions): Promise<CoordNode> {
    const logger = o.logger ?? silentLogger();
    const me = o.members.find((m) => m.id === o.id);
    if (!me)
      throw new FaultlineError(
        ErrorCode.BadConfig,
        `${o.id} is not one of the cluster's members (${o.members.map((m) => m.id).join(", ")})`,
      );
    if (o.durability === "sync" && !o.data)
      throw new FaultlineError(
        ErrorCode.BadConfig,
        "durability sync needs a data directory (or use durability memory for tests)",
      );
    const host = o.host ?? "127.0.0.1";
    const peers: Record<NodeId, Address> = {};
    for (const m of o.members) if (m.id !== o.id) peers[m.id] = m.raft;
    // Each piece is stopped again if a later one fails to start: nothing is left listening.
    const undo: Array<() => Promise<void> | void> = [];
    try {
      const transport = new TcpTransport({
        id: o.id,
        clusterKey: o.clusterKey,
        host,
        port: o.port || me.raft.port,
        peers,
        logger,
      });
      await transport.start();
      undo.push(() => transport.stop());
      let agent: AgentClient | undefined;
      if (o.agent) {
        const a = new AgentClient({
          id: o.id,
          agentId: o.agent.id,
          socketPath: o.agent.socket,
          clusterKey: o.clusterKey,
          boot: transport.boot,
          logger,
        });
        await a.start();
        undo.push(() => a.stop());
        agent = a;
      }
      const rng = createRng((Math.random() * 2 ** 32) >>> 0); // real-io: a member's seed
      const swimHost = o.swimHost ?? o.agent?.id.replace(/^agent:/, "");
      const detection = new DetectionNode({
        id: o.id,
        clock: realClock,
        rng: rng.fork("swim"),
        transport,
        seeds: Object.keys(peers),
        address: transport.address(),
        boot: transport.boot,
        ...(swimHost ? { host: swimHost } : {}),
        learnAddress: (id, addr) => transport.addPeer(id, addr),
        ...(o.swim ? { swim: o.swim } : {}),
        logger,
      });
      const store = o.durability === "sync" ? LmdbStore.open(o.data!, "sync") : new VolatileStore();
      undo.push(() => store.close());
      const member = new CoordMember({
        id: o.id,
        voters: o.members.map((m) => m.id),
        transport,
        clock: realClock,
        rng: rng.fork("coord"),
        store,
        raft: {
          ...(o.heartbeatMs !== undefined ? { heartbeatMs: o.heartbeatMs } : {}),
          ...(o.electionTimeoutMs !== undefined ? { electionTimeoutMs: o.electionTimeoutMs } : {}),
        },
        monitor: detection.monitor,
        ...(o.commitOffLoop !== undefined ? { commitOffLoop: o.commitOffLoop } : {}),
        ...(o.snapshotCount !== undefined ? { compactEvery: o.snapshotCount } : {}),
        logger,
      });
      let poller: BusyPoller | undefined;
      if (o.busyPollMs !== undefined && o.busyPollMs > 0) {
        const raft = member.raft;
        // A leader polls while its writes and reads wait; a follower for the budget after an append.
        const p = new BusyPoller(() => raft.waiting || raft.core.role !== "leader", o.busyPollMs);
        raft.onWaiting = () => p.kick();
        undo.push(() => p.stop());
        poller = p;
      }
      let server: CoordGrpcServer | undefined;
      let clientPort = 0;
      if (o.clientPort !== false) {
        server = new CoordGrpcServer(
          member,
          {
            version: "3.4.0-faultline",
            members: o.members.map((m) => ({
              id: m.id,
              clientUrl: `http://${m.client.host}:${m.client.port}`,
              peerUrl: `http://${m.raft.host}:${m.raft.port}`,
            })),
          },
          logger,
        );
        const s = server;
        clientPort = await s.listen(`${host}:${o.clientPort || me.client.port}`);
        undo.push(() => s.stop());
      }
      detection.start();
      undo.push(() => detection.stop());
      member.start();
      return new CoordNode(member, transport, detection, store, agent, poller, server, clientPort);
    } catch (e) {
      for (const f of undo.reverse()) await f();
      throw e;
    }
  }

  /** Stop serving, leave the cluster's traffic and close the store. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // Every step runs even if one before it failed; the first failure is reported after.
    const steps: Array<() => unknown> = [
      () => this.server?.stop(),
      () => this.poller?.stop(),
      () => this.member.stop(),
      () => this.detection.stop(),
      () => this.agent?.stop(),
      () => this.transport.stop(),
      () => this.store.close(),
    ];
    let failure: unknown;
    for (const step of steps) {
      try {
        await step();
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== undefined) throw failure;
  }
}
