import type { Scenario, ScenarioOptions } from "./scenario.ts";
import { SimulationFailure, type SimulationResult } from "./simulation.ts";

export interface SwarmOptions extends Omit<ScenarioOptions, "seed" | "keepTrace" | "onTrace"> {
  seeds: number;
  firstSeed?: number;
  /** Called after each run (for progress output). */
  onRun?: (seed: number, outcome: SimulationResult | SimulationFailure) => void;
  /** Stop at the first failure. */
  failFast?: boolean;
}

export interface SwarmResult {
  runs: number;
  failures: SimulationFailure[];
  steps: number;
  virtualMs: number;
  /** Scenario measurements summed over the passing runs. */
  stats: Record<string, number>;
}

/** Run a scenario over many seeds. Failures are collected with their replay commands, never swallowed. */
export function runSwarm(scenario: Scenario, o: SwarmOptions): SwarmResult {
  const first = o.firstSeed ?? 1;
  const out: SwarmResult = { runs: 0, failures: [], steps: 0, virtualMs: 0, stats: {} };
  for (let i = 0; i < o.seeds; i++) {
    const seed = (first + i) >>> 0;
    out.runs++;
    try {
      const r = scenario.run({ seed, nodes: o.nodes, durationMs: o.durationMs, faults: o.faults });
      out.steps += r.steps;
      out.virtualMs += r.virtualMs;
      for (const [k, v] of Object.entries(r.stats ?? {})) out.stats[k] = (out.stats[k] ?? 0) + v;
      o.onRun?.(seed, r);
    } catch (e) {
      if (!(e instanceof SimulationFailure)) throw e;
      out.failures.push(e);
      o.onRun?.(seed, e);
      if (o.failFast) break;
    }
  }
  return out;
}
