import type { DetectionNode } from "../../src/detect/detection-node.ts";
import type { ReportEvent } from "../../src/detect/report.ts";
import type { SwimConfig } from "../../src/membership/swim-types.ts";
import type { LinkConditions } from "../../src/net/sim-link.ts";
import type { NodeId } from "../../src/net/transport.ts";
import { simDetectionNode } from "../../src/sim/scenarios/swim.ts";
import { Simulation } from "../../src/sim/simulation.ts";

export interface Seen {
  at: number;
  observer: NodeId;
  report: ReportEvent;
}

/** A simulated cluster of detection nodes; every report any node publishes is recorded. */
export function swimSim(o: {
  seed?: number;
  nodes: number;
  network?: Partial<LinkConditions>;
  swim?: Partial<SwimConfig>;
  seeds?: (id: NodeId, all: readonly NodeId[]) => NodeId[];
}) {
  const seen: Seen[] = [];
  const sim: Simulation<DetectionNode> = new Simulation<DetectionNode>({
    seed: o.seed ?? 1,
    nodes: o.nodes,
    ...(o.network ? { network: o.network } : {}),
    create: (ctx) => {
      const node = simDetectionNode(ctx, {
        ...(o.seeds ? { seeds: o.seeds(ctx.id, ctx.nodes) } : {}),
        ...(o.swim ? { swim: o.swim } : {}),
      });
      node.monitor.subscribe({}, (report) => seen.push({ at: sim.now(), observer: ctx.id, report }));
      return node;
    },
  });
  sim.start();
  const failures = (subject?: NodeId) =>
    seen.filter(
      (s) => s.report.type === "failure" && (subject === undefined || s.report.subject === subject),
    );
  return { sim, seen, failures };
}
