import type { DetectionNode, DetectionNodeOptions } from "../../detect/detection-node.ts";
import { fuseBound } from "../../fuse/fuse-core.ts";
import { FuseNode } from "../../fuse/fuse-node.ts";
import type { GroupId } from "../../fuse/messages.ts";
import { SWIM_DEFAULTS } from "../../membership/swim-types.ts";
import type { NodeId } from "../../net/transport.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import type { Scenario, ScenarioOptions } from "../scenario.ts";
import { type Invariant, type SimContext, Simulation, type SimulationResult } from "../simulation.ts";
import { simDetectionNode } from "./swim.ts";

/** SWIM timing for the FUSE simulations (faster than memberlist's, so runs stay short). */
export const FUSE_SIM_SWIM = { probeIntervalMs: 200, probeTimeoutMs: 100 };

export class FuseSimNode {
  constructor(
    readonly detection: DetectionNode,
    readonly fuse: FuseNode,
  ) {}
  start(): void {
    this.detection.start();
    this.fuse.start();
  }
  stop(): void {
    this.fuse.stop();
    this.detection.stop();
  }
}

/** Detection with FUSE on a simulated node (FUSE's digest riding on its SWIM probes). */
export function simFuseNode(ctx: SimContext, extra: Partial<DetectionNodeOptions> = {}): FuseSimNode {
  let fuse: FuseNode | undefined;
  const detection = simDetectionNode(ctx, { extension: (peer) => fuse?.digest(peer), ...extra });
  fuse = new FuseNode({
    id: ctx.id,
    boot: String(ctx.incarnation),
    transport: ctx.transport,
    clock: ctx.clock,
    detection,
    logger: ctx.logger,
  });
  return new FuseSimNode(detection, fuse);
}

/** A member's life: node id and incarnation. */
const life = (id: NodeId, inc: number) => `${id}#${inc}`;

/**
 * FUSE groups under random faults: nodes create groups of 2–5 random members, now and then a
 * member signals one, and crashes (with restarts, i.e. new lives), pauses, partitions and bad
 * links hit them. Checked after every step: no member life is told twice about one group; once a
 * group has failed anywhere (or one of its member lives crashed), every member life still running
 * is told within T (`fuseBound`; time spent paused does not count). Measured: how often a group
 * fired although no member life of it had crashed and nobody signalled it.
 */
export const fuseScenario: Scenario = {
  name: "fuse",
  description: "FUSE groups under random faults: bounded notification, agreement, at most once",
  defaults: { nodes: 6, durationMs: 90_000 },
  run: (o) => runFuse(o),
};

interface GroupRecord {
  members: NodeId[];
  /** The life of each member in the group. */
  lives: Set<string>;
  /** When the group first failed anywhere, or a member life of it crashed. */
  failedAt?: number;
  signalled: boolean;
  crashed: boolean;
  notified: Map<string, number>;
}

function runFuse(o: ScenarioOptions): SimulationResult {
  const replay = `npm run sim -- --scenario fuse --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
  const swim = { ...SWIM_DEFAULTS, ...FUSE_SIM_SWIM };
  const T = fuseBound(swim, o.nodes);
  const groups = new Map<GroupId, GroupRecord>();
  /** When to check that every running member life of a failed group has been told. */
  const due: Array<{ at: number; g: GroupId }> = [];
  const failed = (g: GroupId, r: GroupRecord, at: number) => {
    if (r.failedAt !== undefined) return;
    r.failedAt = at;
    due.push({ at: at + T, g });
  };
  const record = (g: GroupId): GroupRecord => {
    let r = groups.get(g);
    if (!r) {
      r = { members: [], lives: new Set(), signalled: false, crashed: false, notified: new Map() };
      groups.set(g, r);
    }
    return r;
  };
  const violations: string[] = [];
  let created = 0;
  let createFailed = 0;
  let signals = 0;
  const invariants: Invariant<FuseSimNode>[] = [
    { name: "at-most-once", check: () => violations[0] },
    {
      name: "bounded-notification",
      check: (sim) => {
        // Only groups whose deadline has come (kept in `due`, so a step costs little).
        const now = sim.now();
        for (let k = 0; k < due.length; k++) {
          const d = due[k]!;
          if (now < d.at) continue;
          due.splice(k--, 1);
          const r = groups.get(d.g)!;
          for (const m of r.members) {
            const l = life(m, sim.incarnation(m));
            if (!r.lives.has(l) || sim.state(m) === "down" || r.notified.has(l)) continue;
            // A life that was paused meanwhile gets T again from when it runs.
            const later = Math.max((resumedAt.get(m) ?? 0) + T, sim.state(m) === "paused" ? now + 1 : 0);
            if (later > now) {
              due.push({ at: later, g: d.g });
              continue;
            }
            return `${l} was not told within T=${(T / 1000).toFixed(1)} s that group ${d.g} failed at ${(r.failedAt! / 1000).toFixed(3)} s`;
          }
        }
        return undefined;
      },
    },
  ];
  const resumedAt = new Map<NodeId, number>();
  /** Nodes any fault of the plan touched (a group of untouched members has no reason to fire). */
  const touched = new Set<NodeId>();
  const sim: Simulation<FuseSimNode> = new Simulation<FuseSimNode>({
    seed: o.seed,
    nodes: o.nodes,
    invariants,
    replay,
    keepTrace: o.keepTrace ?? false,
    traceFrames: false,
    create: (ctx) => {
      const node = simFuseNode(ctx, { swim: FUSE_SIM_SWIM });
      const fuse = node.fuse;
      const me = life(ctx.id, ctx.incarnation);
      fuse.onFailure((n) => {
        ctx.trace(`fuse ${n.group} failed: ${n.reason.type}`);
        // A member may hear of it before its root has reported the creation: keep it all the same.
        const r = record(n.group);
        if (r.notified.has(me)) violations.push(`${me} was told twice that ${n.group} failed`);
        r.notified.set(me, sim.now());
        failed(n.group, r, sim.now());
      });
      return node;
    },
  });
  sim.onLifecycle((e) => {
    if (e.kind !== "crash") return;
    const dead = life(e.id, sim.incarnation(e.id));
    for (const [g, r] of groups) {
      if (r.lives.has(dead) && r.failedAt === undefined) {
        failed(g, r, sim.now());
        r.crashed = true;
      }
    }
  });
  sim.start();

  // The workload: groups made by random live nodes, sometimes signalled later.
  const workloadEnd = o.durationMs * 0.5;
  const createOne = () => {
    const up = sim.ids.filter((id) => sim.state(id) === "up");
    if (up.length >= 2) {
      const root = sim.rng.pick(up);
      const size = 2 + sim.rng.int(4);
      const members = sim.rng.shuffle([...sim.ids]).slice(0, size);
      const node = sim.node(root)!;
      node.fuse.createWith(members, (err, g) => {
        if (err) {
          createFailed++;
          return;
        }
        created++;
        const all = node.fuse.core.members(g) ?? [];
        const r = record(g);
        r.members = all;
        r.lives = new Set(all.map((m) => `${m}#${node.fuse.core.boots(g)?.[m]}`));
        // A member life that crashed before the root heard the last answer: failed from then.
        for (const m of all) {
          if (!r.lives.has(life(m, sim.incarnation(m))) || sim.state(m) === "down") {
            r.crashed = true;
            failed(g, r, sim.now());
          }
        }
        if (sim.rng.float() < 0.1) {
          sim.at(sim.now() + 1000 + sim.rng.float() * 10_000, `signal ${g}`, () => {
            const holder = all.find(
              (m) => sim.state(m) === "up" && sim.node(m)?.fuse.core.state(g) === "live",
            );
            if (!holder) return;
            groups.get(g)!.signalled = true;
            signals++;
            sim.node(holder)!.fuse.signal(g, { why: "test" });
          });
        }
      });
    }
    if (sim.now() < workloadEnd) sim.at(sim.now() + 100 + sim.rng.float() * 400, "create a group", createOne);
  };
  sim.at(3000, "create a group", createOne);
  if (o.faults) {
    const plan = randomFaults(sim.rng, sim.ids, { durationMs: workloadEnd });
    for (const { fault: f } of plan) {
      if (f.kind === "crash" || f.kind === "pause") touched.add(f.node);
      else if (f.kind === "partition") for (const side of f.sides) for (const n of side) touched.add(n);
      else for (const n of [f.a, f.b]) touched.add(n);
    }
    for (const { at, fault } of plan) {
      if (fault.kind === "pause")
        sim.at(at + fault.forMs, `note resume ${fault.node}`, () => resumedAt.set(fault.node, sim.now()));
    }
    applyFaults(sim, plan);
    if (planEnd(plan) > o.durationMs - T)
      throw new Error(`the fuse scenario needs T=${T} ms of quiet after its faults`);
  }
  sim.runUntil(o.durationMs);
  // Agreement at the end: a group is failed at every running member life of it, or at none.
  for (const [g, r] of groups) {
    const states = r.members
      .filter((m) => sim.state(m) === "up" && r.lives.has(life(m, sim.incarnation(m))))
      .map((m) => sim.node(m)!.fuse.core.state(g));
    if (states.includes("failed") && states.some((s) => s !== "failed"))
      sim.fail("agreement", `group ${g} is ${states.join("/")} at its running members`);
  }
  const result = sim.finish();
  const fired = [...groups.values()].filter((r) => r.members.length > 0 && r.notified.size > 0);
  const spontaneous = fired.filter((r) => !r.crashed && !r.signalled);
  result.stats = {
    groupsCreated: created,
    creationsFailed: createFailed,
    groupsFired: fired.length,
    signals,
    firedWithoutCrashOrSignal: spontaneous.length,
    firedWithMembersUntouchedByFaults: spontaneous.filter((r) => r.members.every((m) => !touched.has(m)))
      .length,
  };
  if (o.keepTrace) o.onTrace?.(sim.trace.allLines() ?? []);
  return result;
}
