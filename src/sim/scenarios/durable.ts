import type { DurableHandlers, ProcessId } from "../../durable/ken-core.ts";
import { DurableProcess } from "../../durable/process.ts";
import { SimDurableStore } from "../../durable/store.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import type { Scenario, ScenarioOptions } from "../scenario.ts";
import { type Invariant, type SimContext, Simulation, type SimulationResult } from "../simulation.ts";

/** A source's state: how many messages it has produced (durably, once committed). */
interface SourceState {
  n: number;
}
/** A relay's or sink's state: the last message applied from each source, and what went wrong. */
interface ChainState {
  last: Record<ProcessId, number>;
  applied: number;
  /** Messages that arrived out of order or twice (must stay empty). */
  bad: string[];
}

const SOURCES = ["a1", "a2"];
const RELAY = "b";
const SINK = "c";

/** The handlers of a relay (forwards to `next`) or the sink (no `next`): apply in order, once. */
export function chainHandlers(next: ProcessId | undefined): DurableHandlers<ChainState> {
  return {
    initial: () => ({ last: {}, applied: 0, bad: [] }),
    onMessage(ctx, from, m) {
      const { src, n } = m as { src: ProcessId; n: number };
      const last = ctx.state.last[src] ?? 0;
      if (n !== last + 1) ctx.state.bad.push(`${ctx.self} got ${src}#${n} from ${from} after #${last}`);
      ctx.state.last[src] = Math.max(last, n);
      ctx.state.applied++;
      if (next) ctx.send(next, { src, n });
    },
  };
}

const sourceHandlers = (to: ProcessId): DurableHandlers<SourceState> => ({
  initial: () => ({ n: 0 }),
  onInput(ctx) {
    ctx.state.n++;
    ctx.send(to, { src: ctx.self, n: ctx.state.n });
  },
});

type Node = DurableProcess<SourceState> | DurableProcess<ChainState>;

/**
 * Ken under random faults: two sources feed a relay that feeds a sink (a1, a2 → b → c), each a
 * durable process on its simulated node's stable storage. Crashes land anywhere — also right
 * after a commit, before its messages leave (the release is a step of its own), and between a
 * receive and its turn. Checked after every step: no process applied a message out of order or
 * twice, nor one its source never produced. Checked at the end, after a quiet period: every
 * message each source produced was applied, exactly once, by the relay and the sink.
 */
export const durableScenario: Scenario = {
  name: "durable",
  description: "Ken pipeline a1,a2 → b → c under random faults: exactly once, in order, nothing lost",
  defaults: { nodes: 4, durationMs: 40_000 },
  run: (o) => runDurable(o),
};

function runDurable(o: ScenarioOptions): SimulationResult {
  const replay = `npm run sim -- --scenario durable --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
  /** The independent record: how many messages each source has durably produced. */
  const produced: Record<ProcessId, number> = {};
  let commitCrashes = 0;
  let receiveCrashes = 0;
  /** Crash `id` now (in a step of its own, before its pending work) and restart it soon. */
  const crashNow = (id: ProcessId, why: string) => {
    sim.at(sim.now(), `crash ${id} ${why}`, () => sim.crash(id));
    sim.at(sim.now() + 200 + sim.rng.float() * 800, `restart ${id}`, () => sim.restart(id));
  };
  const invariants: Invariant<Node>[] = [
    {
      name: "exactly-once-in-order",
      check: (sim) => {
        for (const id of [RELAY, SINK]) {
          const n = sim.node(id) as DurableProcess<ChainState> | undefined;
          if (!n) continue;
          const s = n.state;
          if (s.bad.length > 0) return s.bad[0];
          for (const [src, last] of Object.entries(s.last)) {
            if (last > (produced[src] ?? 0))
              return `${id} applied ${src}#${last}, but ${src} has produced only ${produced[src] ?? 0}`;
          }
        }
        return undefined;
      },
    },
  ];
  const produceUntil = o.durationMs * 0.5;
  const sim: Simulation<Node> = new Simulation<Node>({
    seed: o.seed,
    nodes: [...SOURCES, RELAY, SINK],
    invariants,
    replay,
    keepTrace: o.keepTrace ?? false,
    create: (ctx: SimContext) => {
      const common = {
        id: ctx.id,
        transport: ctx.transport,
        clock: ctx.clock,
        store: new SimDurableStore(ctx.store),
        deferRelease: true,
        logger: ctx.logger,
        // Sometimes crash right after a commit, before anything it produced has left.
        onCommit: () => {
          if (o.faults && sim.rng.float() < 0.02) {
            commitCrashes++;
            crashNow(ctx.id, "after a commit");
          }
        },
      };
      // Sometimes crash right after a frame arrived, before its turn ran (and was acknowledged).
      ctx.transport.on("message", () => {
        if (o.faults && sim.rng.float() < 0.005 && sim.state(ctx.id) === "up") {
          receiveCrashes++;
          crashNow(ctx.id, "after a receive");
        }
      });
      if (SOURCES.includes(ctx.id)) {
        const p = new DurableProcess<SourceState>({
          ...common,
          handlers: sourceHandlers(RELAY),
          onCommit: () => {
            produced[ctx.id] = p.state.n;
            common.onCommit();
          },
        });
        // A steady trickle of local inputs while producing lasts (a lost input had no effect).
        const tick = () => {
          if (ctx.clock.now() >= produceUntil) return;
          p.submit("tick");
          ctx.clock.setTimer(10 + ctx.rng.float() * 30, tick);
        };
        ctx.clock.setTimer(0, tick);
        return p;
      }
      return new DurableProcess<ChainState>({
        ...common,
        handlers: chainHandlers(ctx.id === RELAY ? SINK : undefined),
      });
    },
  });
  sim.start();
  if (o.faults) {
    const plan = randomFaults(sim.rng, sim.ids, { durationMs: produceUntil });
    applyFaults(sim, plan);
    if (planEnd(plan) > o.durationMs) {
      throw new Error("the durable scenario's faults outlast its --duration: give it a longer one");
    }
  }
  sim.runUntil(o.durationMs);
  for (const id of sim.ids) if (sim.state(id) === "down") sim.restart(id);
  sim.runFor(20_000);
  // Nothing lost: the relay and the sink applied every message every source produced.
  for (const id of [RELAY, SINK]) {
    const s = (sim.node(id) as DurableProcess<ChainState>).state;
    for (const src of SOURCES) {
      if ((s.last[src] ?? 0) !== (produced[src] ?? 0))
        sim.fail(
          "nothing-lost",
          `${id} applied ${s.last[src] ?? 0} of ${src}'s ${produced[src] ?? 0} messages`,
        );
    }
    const total = SOURCES.reduce((t, src) => t + (produced[src] ?? 0), 0);
    if (s.applied !== total)
      sim.fail("exactly-once", `${id} applied ${s.applied} messages, ${total} were produced`);
  }
  const result = sim.finish();
  result.stats = {
    produced: SOURCES.reduce((t, src) => t + (produced[src] ?? 0), 0),
    crashesAfterCommit: commitCrashes,
    crashesAfterReceive: receiveCrashes,
  };
  if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
  return result;
}
