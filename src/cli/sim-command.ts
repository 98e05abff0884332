import type { Command } from "commander";
import { z } from "zod";
import { scenarios } from "../sim/scenarios/index.ts";
import { SimulationFailure } from "../sim/simulation.ts";
import { runSwarm } from "../sim/swarm.ts";
import { duration, intString, validate } from "./options.ts";

const SimOptions = z.object({
  scenario: z.string(),
  seed: intString(0, 2 ** 32 - 1).optional(),
  seeds: intString(1, 10_000_000).optional(),
  firstSeed: intString(0, 2 ** 32 - 1),
  nodes: intString(1, 100_000).optional(),
  duration: duration.optional(),
  faults: z.boolean(),
  trace: z.boolean(),
  failFast: z.boolean(),
});

export function registerSim(program: Command): void {
  program
    .command("sim")
    .description("run the deterministic simulator: one seed (run/replay) or a swarm of seeds")
    .option("--scenario <name>", `scenario to run (${Object.keys(scenarios).join(", ")})`, "ping")
    .option("--seed <n>", "run (or replay) this one seed")
    .option("--seeds <n>", "swarm: run this many seeds")
    .option("--first-seed <n>", "swarm: first seed", "1")
    .option("--nodes <n>", "number of nodes (default: the scenario's)")
    .option("--duration <time>", "virtual time to simulate, e.g. 30s (default: the scenario's)")
    .option("--no-faults", "run without the random fault plan")
    .option("--trace", "print the whole event trace (single run)", false)
    .option("--fail-fast", "swarm: stop at the first failing seed", false)
    .action((raw) => {
      const o = validate(SimOptions, raw, "sim options");
      const scenario = scenarios[o.scenario];
      if (!scenario) {
        throw new Error(
          `unknown scenario "${o.scenario}": choose one of ${Object.keys(scenarios).join(", ")}`,
        );
      }
      const nodes = o.nodes ?? scenario.defaults.nodes;
      const durationMs = o.duration ?? scenario.defaults.durationMs;
      const started = performance.now();
      if (o.seeds !== undefined) {
        let done = 0;
        const r = runSwarm(scenario, {
          seeds: o.seeds,
          firstSeed: o.firstSeed,
          nodes,
          durationMs,
          faults: o.faults,
          failFast: o.failFast,
          onRun: (seed, outcome) => {
            done++;
            if (outcome instanceof SimulationFailure)
              console.error(`seed ${seed} FAILED: ${outcome.message}`);
            else if (done % 100 === 0) console.error(`  ${done}/${o.seeds} seeds`);
          },
        });
        const wall = (performance.now() - started) / 1000;
        console.log(
          `swarm ${scenario.name}: ${r.runs} seeds, ${r.failures.length} failed, ${r.steps} steps, ` +
            `${(r.virtualMs / 1000).toFixed(0)} s virtual in ${wall.toFixed(1)} s wall`,
        );
        for (const [k, v] of Object.entries(r.stats)) console.log(`  ${k}: ${v}`);
        for (const line of falseSuspicionRates(r.stats)) console.log(`  ${line}`);
        for (const f of r.failures) console.log(`  replay: ${f.replayCommand}`);
        process.exitCode = r.failures.length > 0 ? 1 : 0;
        return;
      }
      const seed = o.seed ?? 1;
      try {
        const r = scenario.run({
          seed,
          nodes,
          durationMs,
          faults: o.faults,
          keepTrace: o.trace,
          onTrace: (lines) => {
            for (const l of lines) console.log(l);
          },
        });
        const wall = (performance.now() - started) / 1000;
        console.log(
          `${scenario.name} seed ${seed}: ${r.steps} steps, ${(r.virtualMs / 1000).toFixed(1)} s virtual in ` +
            `${wall.toFixed(2)} s wall; frames sent ${r.frames.sent}, delivered ${r.frames.delivered}; trace ${r.traceHash}`,
        );
        for (const [k, v] of Object.entries(r.stats ?? {})) console.log(`  ${k}: ${v}`);
      } catch (e) {
        if (!(e instanceof SimulationFailure)) throw e;
        console.error(e.message);
        console.error("last events:");
        for (const l of e.recentTrace) console.error(`  ${l}`);
        process.exitCode = 1;
      }
    });
}

/**
 * The false-suspicion rate of detection scenarios: failure reports per node-hour about nodes that
 * were up when reported (a pause or a network fault made them look dead), and about nodes no
 * fault touched at all (pure false positives).
 */
export function falseSuspicionRates(stats: Record<string, number>): string[] {
  const hours = (stats.nodeSeconds ?? 0) / 3600;
  if (!(hours > 0) || stats.reportsAboutLiveNodes === undefined) return [];
  const rate = (n: number | undefined) => ((n ?? 0) / hours).toFixed(3);
  return [
    `false suspicions: ${rate(stats.reportsAboutLiveNodes)} reports per node-hour about nodes that were up ` +
      `(${rate(stats.reportsAboutUntouchedNodes)} about nodes no fault touched), over ${hours.toFixed(1)} node-hours`,
  ];
}
