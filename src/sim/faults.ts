import type { LinkConditions } from "../net/sim-link.ts";
import type { NodeId } from "../net/transport.ts";
import type { Rng } from "../runtime/rng.ts";
import type { SimNode, Simulation } from "./simulation.ts";

/** A fault and how long it lasts; every fault undoes itself after `forMs`. */
export type Fault =
  | { kind: "crash"; node: NodeId; host: boolean; forMs: number }
  | { kind: "pause"; node: NodeId; forMs: number }
  | { kind: "partition"; sides: NodeId[][]; oneWay: boolean; forMs: number }
  | { kind: "link"; a: NodeId; b: NodeId; conditions: Partial<LinkConditions>; forMs: number }
  | { kind: "flap"; a: NodeId; b: NodeId; upMs: number; downMs: number; cycles: number };

export interface ScheduledFault {
  at: number;
  fault: Fault;
}

export function describeFault(f: Fault): string {
  switch (f.kind) {
    case "crash":
      return `crash ${f.node}${f.host ? " (host)" : ""} for ${f.forMs.toFixed(0)}ms`;
    case "pause":
      return `pause ${f.node} for ${f.forMs.toFixed(0)}ms`;
    case "partition":
      return `partition ${f.sides.map((s) => s.join(",")).join(f.oneWay ? " -/> " : " | ")} for ${f.forMs.toFixed(0)}ms`;
    case "link":
      return `link ${f.a}-${f.b} ${JSON.stringify(f.conditions)} for ${f.forMs.toFixed(0)}ms`;
    case "flap":
      return `flap ${f.a}-${f.b} down ${f.downMs.toFixed(0)}ms/up ${f.upMs.toFixed(0)}ms x${f.cycles}`;
  }
}

/** How long a fault holds its nodes or links. */
function faultSpan(f: Fault): number {
  return f.kind === "flap" ? f.cycles * (f.upMs + f.downMs) : f.forMs;
}

/** Schedule a fault plan on a simulation; each fault is applied, then undone, as its own step. */
export function applyFaults<N extends SimNode>(sim: Simulation<N>, plan: readonly ScheduledFault[]): void {
  for (const { at, fault: f } of plan) {
    sim.at(at, describeFault(f), () => {
      switch (f.kind) {
        case "crash":
          sim.crash(f.node, { host: f.host });
          sim.at(at + f.forMs, `restart ${f.node}`, () => sim.restart(f.node));
          break;
        case "pause":
          sim.pause(f.node);
          sim.at(at + f.forMs, `resume ${f.node}`, () => sim.resume(f.node));
          break;
        case "partition":
          sim.network.partition(f.sides, { oneWay: f.oneWay });
          sim.at(at + f.forMs, "heal partition", () =>
            sim.network.unpartition(f.sides, { oneWay: f.oneWay }),
          );
          break;
        case "link":
          sim.network.setLink(f.a, f.b, f.conditions);
          sim.at(at + f.forMs, `reset link ${f.a}-${f.b}`, () => sim.network.resetLink(f.a, f.b));
          break;
        case "flap":
          sim.network.flap(f.a, f.b, { upMs: f.upMs, downMs: f.downMs, cycles: f.cycles });
          break;
      }
    });
  }
}

export interface RandomFaultOptions {
  durationMs: number;
  /** Mean time between fault starts (exponentially distributed). */
  meanGapMs?: number;
  /** Longest a single fault lasts. */
  maxSpanMs?: number;
  /** At most this many nodes crashed or paused at once (default: a minority). */
  maxDown?: number;
  /** Which kinds to draw from (default: all). */
  kinds?: readonly Fault["kind"][];
}

const ALL_KINDS: readonly Fault["kind"][] = ["crash", "pause", "partition", "link", "flap"];

/**
 * A random fault plan drawn from `rng`: crashes (process or host) with restart, pauses, symmetric and
 * one-way partitions, degraded links (loss, delay and jitter, duplication, reordering, corruption,
 * a bandwidth bottleneck), and flapping links. Node-holding faults never take down more than
 * `maxDown` nodes at once, and never overlap on one node.
 */
export function randomFaults(rng: Rng, ids: readonly NodeId[], o: RandomFaultOptions): ScheduledFault[] {
  const meanGap = o.meanGapMs ?? 2000;
  const maxSpan = o.maxSpanMs ?? 5000;
  const maxDown = o.maxDown ?? Math.max(1, Math.floor((ids.length - 1) / 2));
  const kinds = o.kinds ?? ALL_KINDS;
  const busyUntil = new Map<NodeId, number>();
  const plan: ScheduledFault[] = [];
  let t = 0;
  for (;;) {
    t += -Math.log(1 - rng.float()) * meanGap;
    if (t >= o.durationMs) break;
    const kind = rng.pick(kinds);
    const span = rng.range(50, maxSpan);
    const downNow = [...busyUntil.values()].filter((u) => u > t).length;
    const free = ids.filter((id) => (busyUntil.get(id) ?? 0) <= t);
    const pair = (): [NodeId, NodeId] => {
      const a = rng.pick(ids);
      let b = rng.pick(ids);
      while (b === a && ids.length > 1) b = rng.pick(ids);
      return [a, b];
    };
    let f: Fault | undefined;
    switch (kind) {
      case "crash":
      case "pause": {
        if (downNow >= maxDown || free.length === 0) break;
        const node = rng.pick(free);
        f =
          kind === "crash" ? { kind, node, host: rng.chance(0.3), forMs: span } : { kind, node, forMs: span };
        busyUntil.set(node, t + span);
        break;
      }
      case "partition": {
        if (ids.length < 2) break;
        const shuffled = rng.shuffle([...ids]);
        const cut = 1 + rng.int(shuffled.length - 1);
        f = {
          kind,
          sides: [shuffled.slice(0, cut), shuffled.slice(cut)],
          oneWay: rng.chance(0.3),
          forMs: span,
        };
        break;
      }
      case "link": {
        const [a, b] = pair();
        const conditions: Partial<LinkConditions> = rng.pick<Partial<LinkConditions>>([
          { loss: rng.range(0.05, 0.5) },
          { delayMs: rng.range(1, 50), jitterMs: rng.range(0, 20) },
          { duplicate: rng.range(0.05, 0.3) },
          { reorder: rng.range(0.05, 0.5), reorderWindowMs: rng.range(1, 30) },
          { corrupt: rng.range(0.05, 0.5) },
          { bandwidth: rng.range(2_000, 50_000), queueBytes: 16 * 1024 },
        ]);
        f = { kind, a, b, conditions, forMs: span };
        break;
      }
      case "flap": {
        const [a, b] = pair();
        const downMs = rng.range(20, 500);
        const upMs = rng.range(20, 500);
        f = { kind, a, b, upMs, downMs, cycles: Math.max(1, Math.floor(span / (upMs + downMs))) };
        break;
      }
    }
    if (f && distinctEnds(f)) plan.push({ at: t, fault: f });
  }
  return plan;
}

function distinctEnds(f: Fault): boolean {
  return !((f.kind === "link" || f.kind === "flap") && f.a === f.b);
}

/** When the last fault of a plan has been undone. */
export function planEnd(plan: readonly ScheduledFault[]): number {
  return plan.reduce((end, s) => Math.max(end, s.at + faultSpan(s.fault)), 0);
}
