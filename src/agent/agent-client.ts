import type { Logger } from "pino";
import { TcpTransport } from "../net/tcp-transport.ts";
import type { NodeId } from "../net/transport.ts";
import type { LocalMessage } from "./messages.ts";

export interface AgentClientOptions {
  /** This process's cluster id (what peers will see reported). */
  id: NodeId;
  /** The host agent's id (`agent:<host>`) and Unix socket path. */
  agentId: NodeId;
  socketPath: string;
  clusterKey: Uint8Array;
  /** Defaults to this process's pid. */
  pid?: number;
  /** The process's boot id (its cluster transport's `boot`), echoed in the agent's notices. */
  boot?: string;
  logger?: Logger;
}

/**
 * A process's registration with its host agent: an authenticated connection on the agent's Unix
 * socket, held open for the life of the process. The kernel closes it when the process dies, however
 * it dies, and that is what lets the agent report the exit at once. Reconnects (and registers
 * again) if the agent restarts.
 */
export class AgentClient {
  private readonly transport: TcpTransport;

  constructor(private readonly o: AgentClientOptions) {
    this.transport = new TcpTransport({
      id: o.id,
      clusterKey: o.clusterKey,
      listen: false,
      reconnectMaxMs: 500,
      ...(o.logger ? { logger: o.logger } : {}),
    });
  }

  async start(): Promise<void> {
    await this.transport.start();
    this.transport.on("connection", (e) => {
      if (e.peer === this.o.agentId && e.kind === "connected") this.register();
    });
    this.transport.addPeer(this.o.agentId, { path: this.o.socketPath }, { connect: true });
  }

  /** Whether the registration connection is up. */
  connected(): boolean {
    return this.transport.peerState(this.o.agentId) === "connected";
  }

  /** Deregister (a deliberate exit is not a failure) and close. */
  async stop(): Promise<void> {
    if (this.connected()) {
      const bye: LocalMessage = { p: "agent", t: "unregister" };
      this.transport.send(this.o.agentId, bye);
      await new Promise((r) => setTimeout(r, 20)); // real-io: let the unregister leave before closing
    }
    await this.transport.stop();
  }

  private register(): void {
    const m: LocalMessage = {
      p: "agent",
      t: "register",
      pid: this.o.pid ?? process.pid,
      ...(this.o.boot ? { boot: this.o.boot } : {}),
    };
    this.transport.send(this.o.agentId, m);
  }
}
