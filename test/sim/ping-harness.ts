import type { LinkConditions } from "../../src/net/sim-link.ts";
import type { NodeId } from "../../src/net/transport.ts";
import { PingNode, type PingOptions } from "../../src/sim/ping.ts";
import { Simulation } from "../../src/sim/simulation.ts";

export interface Delivery {
  at: number;
  from: NodeId;
  to: NodeId;
  seq: number;
}
export interface Pong {
  at: number;
  node: NodeId;
  from: NodeId;
  seq: number;
  rtt: number;
}

/** A simulation of PingNodes that records every ping delivered and every pong received. */
export function pingSim(o: {
  seed?: number;
  nodes: number;
  ping?: PingOptions | ((id: NodeId) => PingOptions);
  network?: Partial<LinkConditions>;
}) {
  const pings: Delivery[] = [];
  const pongs: Pong[] = [];
  const sent: Delivery[] = [];
  const sim: Simulation<PingNode> = new Simulation<PingNode>({
    seed: o.seed ?? 1,
    nodes: o.nodes,
    ...(o.network ? { network: o.network } : {}),
    create: (ctx) => {
      const opts = typeof o.ping === "function" ? o.ping(ctx.id) : (o.ping ?? {});
      const node = new PingNode({ ...ctx, peers: ctx.nodes }, opts);
      node.observer = {
        pinged: (to, seq, at) => sent.push({ at, from: ctx.id, to, seq }),
        ping: (from, seq) => pings.push({ at: sim.now(), from, to: ctx.id, seq }),
        pong: (from, seq, rtt) => pongs.push({ at: sim.now(), node: ctx.id, from, seq, rtt }),
      };
      return node;
    },
  });
  sim.start();
  return { sim, pings, pongs, sent };
}

export const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
