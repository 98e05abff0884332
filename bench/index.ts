// npm run bench [-- --quick]: every benchmark, each beside its baseline measured in the same run.
import { benchCoord } from "./coord.ts";
import { benchDetect } from "./detect.ts";
import { benchDurable } from "./durable.ts";
import { benchFuse } from "./fuse.ts";
import { benchSim } from "./sim.ts";
import { benchSwimScale } from "./swim-scale.ts";
import { benchTransport } from "./transport.ts";

const quick = process.argv.includes("--quick");
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt > 0 ? process.argv[onlyAt + 1] : undefined;
const want = (name: string) => only === undefined || only === name;
const started = new Date().toISOString();
console.log(`# faultline benchmarks (${started}, node ${process.version}${quick ? ", quick" : ""})\n`);
if (want("transport")) {
  console.log("## Transport\n");
  console.log(await benchTransport(quick));
}
if (want("detect")) {
  console.log("\n## Detection\n");
  console.log(await benchDetect(quick));
}
if (want("swim-scale")) {
  console.log("\n## SWIM at scale\n");
  console.log(benchSwimScale(quick ? [100] : [100, 1000, 5000]));
}
if (want("sim")) {
  console.log("\n## Simulator\n");
  console.log(benchSim(quick));
}
if (want("durable")) {
  console.log("\n## Durable processes\n");
  console.log(await benchDurable(quick));
}
if (want("fuse")) {
  console.log("\n## FUSE groups\n");
  console.log(await benchFuse(quick));
}
if (want("coord") || only === "coord-replication") {
  // --only coord-replication: the replication table alone (no failover rounds, no ZooKeeper).
  console.log("\n## Coordination service\n");
  console.log(await benchCoord(quick, only === "coord-replication"));
}
