import type { Scenario } from "../scenario.ts";
import { durableScenario } from "./durable.ts";
import { fuseScenario } from "./fuse.ts";
import { pingScenario } from "./ping.ts";
import { raftScenario } from "./raft.ts";
import { swimAgentsScenario, swimFencingScenario, swimScenario } from "./swim.ts";

/** Scenarios `faultline sim --scenario NAME` can run. */
export const scenarios: Record<string, Scenario> = {
  ping: pingScenario,
  swim: swimScenario,
  "swim-agents": swimAgentsScenario,
  "swim-fencing": swimFencingScenario,
  durable: durableScenario,
  fuse: fuseScenario,
  raft: raftScenario,
};
