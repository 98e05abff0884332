// A five-node cluster on virtual time: partition it 2|3, watch cross-side traffic stop, heal it.
// The same seed replays the same run, byte for byte (compare the trace hashes).
// Run: npx tsx examples/simulation/partition.ts [seed]
import { PingNode, Simulation } from "../../src/index.ts";

const seed = Number(process.argv[2] ?? 1);
const sim = new Simulation<PingNode>({
  seed,
  nodes: 5,
  network: { delayMs: 1, jitterMs: 0.5 },
  create: (ctx) => new PingNode({ ...ctx, peers: ctx.nodes }, { intervalMs: 100 }),
}).start();

const sides = [
  ["n1", "n2"],
  ["n3", "n4", "n5"],
];
const crossPongs = () => {
  let n = 0;
  for (const [id, node] of sim.live()) {
    for (const [peer, v] of node.view) if (sides[0]!.includes(id) !== sides[0]!.includes(peer)) n += v.pongs;
  }
  return n;
};

sim.runUntil(2000);
console.log(`t=2s   cross-side pongs so far: ${crossPongs()}`);
sim.network.partition(sides);
const atCut = crossPongs();
sim.runUntil(5000);
console.log(`t=5s   partitioned for 3 s: ${crossPongs() - atCut} new cross-side pongs`);
sim.network.unpartition(sides);
sim.runUntil(7000);
console.log(`t=7s   healed for 2 s: ${crossPongs() - atCut} new cross-side pongs`);
const r = sim.finish();
console.log(`seed ${seed}: ${r.steps} steps, trace ${r.traceHash.slice(0, 16)}…`);
