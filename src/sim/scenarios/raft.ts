import type { Entry } from "../../consensus/messages.ts";
import { type Done, RaftNode, type SnapshotWriter, type StateMachine } from "../../consensus/raft-node.ts";
import type { RaftOptions, Ready } from "../../consensus/raft-types.ts";
import { SimDurableStore } from "../../durable/store.ts";
import type { NodeId } from "../../net/transport.ts";
import { decode, encode } from "../../runtime/codec.ts";
import { ErrorCode, isFaultlineError } from "../../runtime/errors.ts";
import { applyFaults, planEnd, randomFaults } from "../faults.ts";
import {
  checkLinearizable,
  type Operation,
  partition,
  type RegisterInput,
  type RegisterOutput,
  registerModel,
} from "../linearizability.ts";
import type { Scenario, ScenarioOptions } from "../scenario.ts";
import { type Invariant, type SimContext, Simulation, type SimulationResult } from "../simulation.ts";

/** A replicated register map: put, compare-and-swap (reads go through ReadIndex, not the log). */
export class RegisterMachine implements StateMachine {
  values = new Map<string, string>();
  apply(e: Entry): unknown {
    if (e.type !== "normal") return null;
    const c = e.data as RegisterInput;
    if (c.op === "put") {
      this.values.set(c.key, c.value);
      return null;
    }
    if (c.op === "cas") {
      const swaps = (this.values.get(c.key) ?? null) === c.from;
      if (swaps) this.values.set(c.key, c.to);
      return swaps;
    }
    return null;
  }
  restore(data: unknown): void {
    this.values = new Map(Object.entries((data as Record<string, string> | undefined) ?? {}));
  }
  snapshot(): unknown {
    return Object.fromEntries(this.values);
  }
  /**
   * With `stepped`: snapshots are written a step at a time (as the coordination store writes its
   * own), the state of now handed over a few steps later.
   */
  snapshotWriter?: () => SnapshotWriter;

  constructor(stepped = false) {
    if (stepped) {
      this.snapshotWriter = () => {
        const now = this.snapshot();
        let steps = 1 + (this.values.size >> 1);
        return { step: () => (--steps > 0 ? undefined : encode(now)) };
      };
    }
  }
}

export class RaftSimNode {
  constructor(
    readonly raft: RaftNode,
    readonly kv: RegisterMachine,
  ) {}
  start(): void {
    this.raft.start();
  }
  stop(): void {
    this.raft.stop();
  }
}

export interface RaftSimHooks {
  onReady?(id: NodeId, node: RaftNode, r: Ready): void;
}

/** A Raft member with a register machine on a simulated node; writes take 0.05–2 ms to be durable. */
export function simRaftNode(
  ctx: SimContext,
  hooks: RaftSimHooks = {},
  o: { compactEvery?: number; raft?: Partial<RaftOptions> } = {},
): RaftSimNode {
  const kv = new RegisterMachine(true);
  const rng = ctx.rng.fork("raft");
  const disk = ctx.rng.fork("disk");
  const steps = ctx.rng.fork("snapshot-steps");
  let node: RaftNode | undefined;
  node = new RaftNode({
    id: ctx.id,
    voters: ctx.nodes,
    transport: ctx.transport,
    clock: ctx.clock,
    rng,
    store: new SimDurableStore(ctx.store, "raft/"),
    stateMachine: kv,
    compactEvery: o.compactEvery ?? 64,
    // Faster than the defaults, so that a short run sees many elections; small appends and snapshot
    // chunks, so that every snapshot goes in several chunks and a backlog in several appends.
    raft: {
      heartbeatMs: 20,
      electionTimeoutMs: 150,
      suspectAfterMs: 80,
      maxBatchBytes: 600,
      snapshotChunkBytes: 8,
      ...o.raft,
    },
    commitDelay: () => disk.range(0.05, 2),
    snapshotStepDelay: () => steps.range(0, 1),
    // Small slices, so that a snapshot is stored over several commits, crashes land in between.
    storage: { staleDeletesPerCommit: 16, snapshotChunkBytes: 16 },
    logger: ctx.logger,
    onReady: (r) => hooks.onReady?.(ctx.id, node!, r),
    onLeader: (id, term) => ctx.trace(`leader ${id ?? "-"} term ${term}`),
  });
  return new RaftSimNode(node, kv);
}

type Op = Operation<RegisterInput, RegisterOutput>;

const describe = (e: Entry | undefined) =>
  e ? `${e.term}|${e.type}|${JSON.stringify(e.data ?? null)}` : "?";

/**
 * Raft with a register map under random faults (crashes and restarts, host crashes, pauses,
 * partitions, lossy, slow, duplicating, reordering and corrupting links, flapping). Four clients
 * put, compare-and-swap and read through whoever they think leads. The detector is modelled as
 * the host agent would be: a crashed process is reported certain to every member 2 ms later; a
 * paused one is suspected after 150 ms; and now and then a member wrongly suspects its leader.
 *
 * After every step: election safety (one leader per term), log matching (an index and term name
 * one entry, with one predecessor), leader completeness (a new leader holds every entry applied
 * anywhere) and state-machine safety (every member applies the same entry at an index). At the
 * end, once the faults have healed: one leader, every member applied the same, and each key's
 * client history is linearizable.
 */
export const raftScenario: Scenario = {
  name: "raft",
  description: "Raft + register map under random faults: safety after every step, linearizable histories",
  defaults: { nodes: 5, durationMs: 60_000 },
  run: (o) => runRaft(o),
};

function runRaft(o: ScenarioOptions): SimulationResult {
  const replay = `npm run sim -- --scenario raft --nodes ${o.nodes} --duration ${o.durationMs}${o.faults ? "" : " --no-faults"}`;
  const leaders = new Map<number, NodeId>();
  const byIndexTerm = new Map<string, string>();
  const applied = new Map<number, string>();
  const appliedTerm = new Map<number, number>();
  /**
   * For each applied index, the term of the first member that applied it: an upper bound on the
   * term in which the entry was committed (the committing leader applies it in its own term).
   */
  const committedBy = new Map<number, number>();
  /** The register map after each applied index, by a reference machine (snapshots are checked against it). */
  const reference = new RegisterMachine();
  const stateAt = new Map<number, string>();
  const canonical = (values: Record<string, string>) => JSON.stringify(Object.entries(values).sort());
  const checkedLeaders = new Set<string>();
  let sim: Simulation<RaftSimNode>;
  let crashRng: ReturnType<Simulation<RaftSimNode>["rng"]["fork"]>;
  const stats = {
    crashesInWriteWindow: 0,
    elections: 0,
    certainFailovers: 0,
    opsCompleted: 0,
    opsPending: 0,
    snapshotsSent: 0,
    snapshotsInstalled: 0,
  };

  const hooks: RaftSimHooks = {
    onReady(id, node, r) {
      const log = node.core.log;
      for (const e of r.write?.entries ?? []) {
        const prev = log.term(e.index - 1);
        const k = `${e.index}/${e.term}`;
        const v = `${prev ?? "?"}>${describe(e)}`;
        const seen = byIndexTerm.get(k);
        if (seen === undefined) byIndexTerm.set(k, v);
        else if (seen !== v && !seen.startsWith("?") && !v.startsWith("?")) {
          sim.fail("log matching", `${id} holds ${k} as ${v}; another member holds it as ${seen}`);
        }
      }
      const snap = r.write?.snapshot;
      if (snap && snap.meta.index > 0) {
        // A snapshot, made here or received, is the state machine at its index, exactly.
        const want = stateAt.get(snap.meta.index);
        const got = canonical((decode(snap.data) as Record<string, string> | undefined) ?? {});
        if (want !== undefined && got !== want) {
          sim.fail(
            "snapshot",
            `${id} stores a snapshot at ${snap.meta.index} holding ${got}; the state there was ${want}`,
          );
        }
      }
      if (r.applySnapshot) {
        stats.snapshotsInstalled++;
        const m = r.applySnapshot.meta;
        const t = appliedTerm.get(m.index);
        if (t !== undefined && t !== m.term)
          sim.fail(
            "state machine safety",
            `${id} restores a snapshot at ${m.index} of term ${m.term}; ${t} was applied there`,
          );
      }
      for (const e of r.apply) {
        const v = describe(e);
        const seen = applied.get(e.index);
        if (seen === undefined) {
          applied.set(e.index, v);
          appliedTerm.set(e.index, e.term);
          committedBy.set(e.index, node.core.term);
          // Indexes are first applied in order (a member applies in order, and a snapshot's
          // index was applied somewhere first).
          reference.apply(e);
          stateAt.set(e.index, canonical(Object.fromEntries(reference.values)));
        } else if (seen !== v) {
          sim.fail(
            "state machine safety",
            `${id} applies ${v} at ${e.index}; another member applied ${seen}`,
          );
        }
      }
      for (const s of r.send) if (s.msg.t === "snap") stats.snapshotsSent++;
      // Crash a member inside the window where what it just wrote is not yet durable — where an
      // acknowledgement or a vote sent too early would be a lie.
      const risky = r.write && (r.sendDurable.length || r.send.length);
      if (o.faults && risky && crashRng.chance(r.write?.hard ? 0.05 : 0.004)) {
        const down = sim.ids.filter((x) => sim.state(x) !== "up").length;
        if (down < Math.floor((o.nodes - 1) / 2) && sim.now() < o.durationMs * 0.7) {
          stats.crashesInWriteWindow++;
          sim.at(sim.now() + 0.01, `crash ${id} before its write is durable`, () => {
            if (sim.state(id) !== "up") return;
            sim.crash(id);
            sim.at(sim.now() + crashRng.range(5, 400), `restart ${id}`, () => sim.restart(id));
          });
        }
      }
    },
  };

  const invariants: Invariant<RaftSimNode>[] = [
    {
      name: "election safety",
      check(s) {
        for (const [id, n] of s.live()) {
          const c = n.raft.core;
          if (c.role !== "leader") continue;
          const other = leaders.get(c.term);
          if (other === undefined) {
            leaders.set(c.term, id);
            stats.elections++;
          } else if (other !== id) return `two leaders in term ${c.term}: ${other} and ${id}`;
        }
        return undefined;
      },
    },
    {
      name: "leader completeness",
      check(s) {
        for (const [id, n] of s.live()) {
          const c = n.raft.core;
          if (c.role !== "leader" || checkedLeaders.has(`${id}/${c.term}`)) continue;
          checkedLeaders.add(`${id}/${c.term}`);
          // Leader completeness: every entry committed in an earlier term is in this leader's log.
          // (A leader of an older term that wins late — its grants queued while it was paused —
          // need not hold what later terms committed.)
          for (const [i, t] of appliedTerm) {
            if (i <= c.log.snapshotIndex || committedBy.get(i)! >= c.term) continue;
            if (c.log.term(i) !== t) {
              return `${id} leads term ${c.term} without the entry applied at ${i} (term ${t}); it holds term ${c.log.term(i) ?? "none"} there`;
            }
          }
        }
        return undefined;
      },
    },
  ];

  const staggerMs = [0, 0.2, 4][o.seed % 3]!;
  sim = new Simulation<RaftSimNode>({
    seed: o.seed,
    nodes: o.nodes,
    // Without stagger (some seeds), candidates collide: split votes and same-term rivals.
    create: (ctx) => simRaftNode(ctx, hooks, { raft: { staggerMs } }),
    invariants,
    keepTrace: o.keepTrace ?? false,
    traceFrames: o.keepTrace ?? false,
    replay,
  });
  crashRng = sim.rng.fork("crash-in-window");
  sim.start();

  // The detector, as the host agent makes it: a crash is certain everywhere 2 ms later.
  sim.onLifecycle((e) => {
    if (e.kind !== "crash") return;
    const crashed = e.id;
    sim.at(sim.now() + 2, `detector: ${crashed} exited`, () => {
      for (const [, n] of sim.live()) {
        if (sim.state(n.raft.id) !== "up") continue;
        if (n.raft.core.leader === crashed && n.raft.core.role !== "leader") {
          stats.certainFailovers++;
          n.raft.leaderDown(crashed, true);
        }
      }
    });
  });

  const faultEnd = o.faults
    ? (() => {
        const plan = randomFaults(sim.rng.fork("plan"), sim.ids, {
          durationMs: o.durationMs * 0.7,
          meanGapMs: 400,
          maxSpanMs: 3000,
        });
        applyFaults(sim, plan);
        for (const { at, fault } of plan) {
          if (fault.kind !== "pause") continue;
          // A paused member is suspected (not certain) by the others after 150 ms.
          if (fault.forMs > 150) {
            sim.at(at + 150, `detector: ${fault.node} suspected`, () => {
              for (const [, n] of sim.live())
                if (sim.state(n.raft.id) === "up") n.raft.leaderDown(fault.node, false);
            });
          }
        }
        return planEnd(plan);
      })()
    : 0;
  // Now and then a member wrongly suspects its leader: the leader must stay.
  const noise = sim.rng.fork("noise");
  for (let t = 500; t < o.durationMs * 0.7; t += noise.range(500, 3000)) {
    sim.at(t, "detector: a false suspicion", () => {
      const live = sim.live().filter(([id]) => sim.state(id) === "up");
      if (!live.length) return;
      const [, n] = noise.pick(live);
      if (n.raft.core.leader) n.raft.leaderDown(n.raft.core.leader, false);
    });
  }

  // Clients.
  const history: Op[] = [];
  const keys = ["a", "b", "c"];
  const stopAt = o.durationMs * 0.85;
  const crng = sim.rng.fork("clients");
  let unique = 0;
  const client = (c: number) => {
    let target: NodeId = crng.pick(sim.ids);
    const next = (delay: number) => {
      if (sim.now() + delay < stopAt) sim.at(sim.now() + delay, `client ${c}`, run);
    };
    const run = () => {
      if (sim.state(target) !== "up") {
        target = crng.pick(sim.ids);
        next(20);
        return;
      }
      const n = sim.node(target)!;
      const key = crng.pick(keys);
      const r = crng.float();
      const input: RegisterInput =
        r < 0.4
          ? { key, op: "put", value: `v${++unique}` }
          : r < 0.6
            ? {
                key,
                op: "cas",
                from: crng.chance(0.5) ? null : `v${crng.int(unique + 1)}`,
                to: `v${++unique}`,
              }
            : { key, op: "get" };
      const op: Op = { call: sim.now(), ret: undefined, input, output: undefined };
      let finished = false;
      const giveUp = sim.now() + 1000;
      sim.at(giveUp, `client ${c} gives up`, () => {
        if (finished) return;
        finished = true; // left pending: it may or may not have taken effect
        target = crng.pick(sim.ids);
        next(1);
      });
      const done: Done = (e, result) => {
        if (finished) return;
        finished = true;
        if (e) {
          if (isFaultlineError(e, ErrorCode.NotLeader)) {
            // Certainly not applied: drop it from the history and follow the hint.
            history.splice(history.indexOf(op), 1);
            const hint = n.raft.core.leader;
            target = hint && hint !== target ? hint : crng.pick(sim.ids);
          }
          next(5);
          return;
        }
        op.ret = sim.now();
        op.output = input.op === "get" ? (n.kv.values.get(key) ?? null) : (result as RegisterOutput);
        next(crng.range(1, 20));
      };
      history.push(op);
      if (input.op === "get") n.raft.readThen(done);
      else n.raft.submit(input, done);
    };
    next(crng.range(100, 300));
  };
  for (let c = 0; c < 4; c++) client(c);

  // Heal, let it settle, then check agreement and the histories.
  const end = Math.max(o.durationMs, faultEnd + 10_000);
  sim.at(Math.max(faultEnd, o.durationMs * 0.85) + 1, "restart everyone", () => {
    for (const id of sim.ids) {
      if (sim.state(id) === "down") sim.restart(id);
      if (sim.state(id) === "paused") sim.resume(id);
    }
  });
  // In one-second slices, so that a livelock (messages bouncing for ever) fails the run instead of hanging it.
  for (let t = 1000; t < end + 1000; t += 1000) {
    const before = sim.stepCount;
    sim.runUntil(Math.min(t, end));
    if (sim.stepCount - before > 100_000 * o.nodes) {
      sim.fail("progress", `${sim.stepCount - before} steps in one virtual second: a livelock`);
    }
  }
  const live = sim.live();
  const leadersNow = live.filter(([, n]) => n.raft.core.role === "leader");
  if (leadersNow.length !== 1) sim.fail("convergence", `${leadersNow.length} leaders after healing`);
  const [lid, leader] = leadersNow[0]!;
  for (const [id, n] of live) {
    if (n.raft.core.applied !== leader.raft.core.applied) {
      sim.fail(
        "convergence",
        `${id} applied ${n.raft.core.applied}, the leader ${lid} ${leader.raft.core.applied}`,
      );
    }
    const a = JSON.stringify([...n.kv.values].sort());
    const b = JSON.stringify([...leader.kv.values].sort());
    if (a !== b) sim.fail("convergence", `${id} holds ${a}, the leader ${b}`);
  }
  for (const [key, ops] of partition(history)) {
    const r = checkLinearizable(registerModel, ops);
    if (!r.ok) {
      sim.fail(
        "linearizability",
        r.unknown
          ? `key ${key}: the checker gave up (${ops.length} operations)`
          : `key ${key}: no linearization of ${ops.length} operations; longest prefix ${r.longest?.length}`,
      );
    }
  }
  stats.opsCompleted = history.filter((h) => h.ret !== undefined).length;
  stats.opsPending = history.length - stats.opsCompleted;
  return { ...sim.finish(), stats };
}
