import type { SimulationResult } from "./simulation.ts";

export interface ScenarioOptions {
  seed: number;
  nodes: number;
  durationMs: number;
  /** Draw a random fault plan from the seed. */
  faults: boolean;
  keepTrace?: boolean;
  /** Called with every trace line when keepTrace is on, after the run. */
  onTrace?: (lines: string[]) => void;
}

export interface Scenario {
  name: string;
  description: string;
  defaults: { nodes: number; durationMs: number };
  run(o: ScenarioOptions): SimulationResult;
}
