// npm run lab [-- --trials 5 --window 20s --only "host crash,partition" --verbose]
// npm run lab -- --clean      remove whatever an interrupted run left behind, and exit
//
// faultline on five "hosts" (network namespaces on one bridge), under real failures injected with
// the kernel's own tools; beside it, what plain TCP and connect() saw in the same trials. Needs
// root; where namespaces cannot be made it says why and exits 0 without running anything.
import { parseArgs } from "node:util";
import { cliBundle } from "../bench/clusters.ts";
import { parseDuration } from "../src/cli/options.ts";
import { cleanAll, whyNot } from "./netns.ts";
import { LAB_SWIM, runLab, SCENARIOS, trialFailed } from "./run.ts";
import { fuseTable, labTable } from "./table.ts";

const { values } = parseArgs({
  options: {
    trials: { type: "string", default: "5" },
    window: { type: "string", default: "20s" },
    only: { type: "string", default: "" },
    clean: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});

if (values.clean) {
  const { processes, namespaces } = cleanAll();
  console.log(`lab: removed ${processes} process(es) and ${namespaces.length} namespace(s)`);
  process.exit(0);
}
const why = whyNot();
if (why) {
  console.log(`lab: skipped: ${why}`);
  process.exit(0);
}
const only = values.only
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
for (const o of only)
  if (!SCENARIOS.some((s) => s.name === o)) {
    console.error(`lab: no scenario "${o}"; the scenarios are: ${SCENARIOS.map((s) => s.name).join(", ")}`);
    process.exit(2);
  }
const trials = Number(values.trials);
if (!Number.isInteger(trials) || trials < 1) {
  console.error(`lab: --trials must be a whole number of at least 1, not "${values.trials}"`);
  process.exit(2);
}
const windowMs = parseDuration(values.window);

// Ctrl-C or a kill: take everything down before going.
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
  process.on(sig, () => {
    console.error(`lab: ${sig}: cleaning up`);
    cleanAll();
    process.exit(130);
  });

const started = new Date().toISOString();
const t0 = performance.now();
console.log(
  `# faultline lab (${started}, node ${process.version}, ${trials} trial(s) per scenario, window ${windowMs / 1000} s, ` +
    `SWIM probe ${LAB_SWIM.probeInterval}/${LAB_SWIM.probeTimeout}, suspicion x${LAB_SWIM.suspicionMult})\n`,
);
const results = await runLab({
  bundle: await cliBundle(),
  trials,
  windowMs,
  only,
  verbose: values.verbose,
  log: (l) => console.log(`  [+${((performance.now() - t0) / 1000).toFixed(0)}s] ${l}`),
  ...LAB_SWIM,
});
console.log(`\n${labTable(results)}`);
const fuse = fuseTable(results);
if (fuse) console.log(`\n${fuse}`);
if (values.json) console.log(JSON.stringify(results));
const bad = results.filter(trialFailed);
if (bad.length > 0) {
  console.log(
    `\nlab: ${bad.length} trial(s) not detected, with wrong reports, or with a FUSE group not failed right`,
  );
  process.exitCode = 1;
}
