// SWIM detection at scale, in simulation (memberlist LAN timing, 1 % loss on every link):
// messages per second per node in steady state, cluster-wide detection time of a crashed process,
// and false reports about healthy members.
import type { DetectionNode } from "../src/detect/detection-node.ts";
import { simDetectionNode } from "../src/sim/scenarios/swim.ts";
import { Simulation } from "../src/sim/simulation.ts";
import { fmt, table } from "./lib.ts";

function sentBytes(sim: Simulation<DetectionNode>): number {
  let b = 0;
  for (const id of sim.ids) b += sim.transport(id).stats().bytesSent;
  return b;
}

export function benchSwimScale(sizes: number[]): string {
  const rows: (string | number)[][] = [];
  for (const n of sizes) {
    const t0 = performance.now();
    let falseReports = 0;
    const falseKinds = new Map<string, number>();
    const detectedBy = new Map<string, number>();
    const victim = "n2";
    let crashedAt = Number.POSITIVE_INFINITY;
    const sim: Simulation<DetectionNode> = new Simulation<DetectionNode>({
      seed: 7,
      nodes: n,
      network: { loss: 0.01, delayMs: 0.2, jitterMs: 0.3 },
      traceFrames: false,
      create: (ctx) => {
        const node = simDetectionNode(ctx, { seeds: [], members: ctx.nodes });
        node.monitor.subscribe({ recovered: false }, (r) => {
          if (r.subject !== victim || sim.now() < crashedAt) {
            falseReports++;
            falseKinds.set(r.kind, (falseKinds.get(r.kind) ?? 0) + 1);
          } else if (!detectedBy.has(ctx.id)) detectedBy.set(ctx.id, sim.now());
        });
        return node;
      },
    }).start();
    sim.runUntil(10_000); // settle
    const sent0 = sim.network.counters.sent;
    const bytes0 = sentBytes(sim);
    sim.runUntil(40_000);
    const perNode = (sim.network.counters.sent - sent0) / n / 30;
    const bytesPerNode = (sentBytes(sim) - bytes0) / n / 30;
    crashedAt = sim.now();
    sim.crash(victim, { host: true });
    sim.runUntil(crashedAt + 120_000);
    const times = [...detectedBy.values()].map((t) => t - crashedAt);
    const all = times.length === n - 1 ? Math.max(...times) : Number.NaN;
    const first = times.length > 0 ? Math.min(...times) : Number.NaN;
    const wall = (performance.now() - t0) / 1000;
    rows.push([
      n,
      fmt(perNode, 2),
      fmt(bytesPerNode, 0),
      fmt(first / 1000, 1),
      fmt(all / 1000, 1),
      `${times.length}/${n - 1}`,
      falseReports === 0 ? 0 : `${falseReports} (${[...falseKinds].map(([k, v]) => `${k} ${v}`).join(", ")})`,
      fmt(wall, 1),
    ]);
  }
  return [
    "SWIM at scale (simulation; memberlist LAN timing; 1 % loss on every link; 30 s of steady state,",
    "then one host crash; false = failure reports about any other member, before or after):",
    "",
    table(
      [
        "members",
        "msgs/s per node",
        "bytes/s per node",
        "first report s",
        "all members know s",
        "reported by",
        "false reports",
        "wall s",
      ],
      rows,
    ),
  ].join("\n");
}
