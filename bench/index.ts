// npm run bench [-- --quick]: every benchmark, each beside its baseline measured in the same run.
import { benchDetect } from "./detect.ts";
import { benchSim } from "./sim.ts";
import { benchSwimScale } from "./swim-scale.ts";
import { benchTransport } from "./transport.ts";

const quick = process.argv.includes("--quick");
const started = new Date().toISOString();
console.log(`# faultline benchmarks (${started}, node ${process.version}${quick ? ", quick" : ""})\n`);
console.log("## Transport\n");
console.log(await benchTransport(quick));
console.log("\n## Detection\n");
console.log(await benchDetect(quick));
console.log("\n## SWIM at scale\n");
console.log(benchSwimScale(quick ? [100] : [100, 1000, 5000]));
console.log("\n## Simulator\n");
console.log(benchSim(quick));
