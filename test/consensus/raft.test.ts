import { describe, expect, it } from "vitest";
import { approxEntryBytes, type Entry, isRaftMessage } from "../../src/consensus/messages.ts";
import { RaftStorage } from "../../src/consensus/raft-storage.ts";
import type { RaftOptions } from "../../src/consensus/raft-types.ts";
import { SimDurableStore } from "../../src/durable/store.ts";
import type { NodeId } from "../../src/net/transport.ts";
import { type RaftSimNode, raftScenario, simRaftNode } from "../../src/sim/scenarios/raft.ts";
import { Simulation } from "../../src/sim/simulation.ts";
import { swarmInChunks } from "../fixtures/swarm.ts";

/** A cluster of Raft members with register machines, on virtual time. */
function cluster(n: number, raft: Partial<RaftOptions> = {}, seed = 7, compactEvery?: number) {
  const sim = new Simulation<RaftSimNode>({
    seed,
    nodes: n,
    create: (ctx) =>
      simRaftNode(
        ctx,
        {},
        {
          raft: { heartbeatMs: 50, electionTimeoutMs: 500, suspectAfterMs: 200, ...raft },
          ...(compactEvery ? { compactEvery } : {}),
        },
      ),
  });
  sim.start();
  const leader = (): [NodeId, RaftSimNode] | undefined => {
    const ls = sim.live().filter(([id, x]) => x.raft.core.role === "leader" && sim.state(id) === "up");
    return ls.length === 1 ? ls[0] : undefined;
  };
  const waitLeader = (within: number): [NodeId, RaftSimNode] => {
    const until = sim.now() + within;
    while (sim.now() < until) {
      const l = leader();
      if (l) return l;
      sim.runFor(1);
    }
    throw new Error(`no single leader within ${within} ms`);
  };
  const put = (node: RaftSimNode, key: string, value: string) => {
    let result: string | undefined;
    node.raft.submit({ key, op: "put", value }, (e) => {
      result = e ? `error: ${e.message}` : "ok";
    });
    return () => result;
  };
  return { sim, leader, waitLeader, put };
}

describe("Raft (simulation)", () => {
  it("elects one leader, replicates, and every member applies the same entries", () => {
    const c = cluster(5);
    const [, l] = c.waitLeader(2000);
    const results = Array.from({ length: 50 }, (_, i) => c.put(l, `k${i % 5}`, `v${i}`));
    c.sim.runFor(500);
    expect(results.map((r) => r())).toEqual(Array(50).fill("ok"));
    const applied = c.sim.live().map(([, n]) => n.raft.core.applied);
    expect(new Set(applied).size).toBe(1);
    for (const [, n] of c.sim.live())
      expect(Object.fromEntries(n.kv.values)).toEqual(Object.fromEntries(l.kv.values));
  });

  /** 50 proposals in one turn on a quiet leader: what the leader's appends that carry entries hold. */
  function burst(maxBatchBytes: number) {
    const appends: Array<{ entries: number; bytes: number }> = [];
    const sim = new Simulation<RaftSimNode>({
      seed: 11,
      nodes: 3,
      create: (ctx) =>
        simRaftNode(
          ctx,
          {
            onReady(_id, node, r) {
              if (node.core.role !== "leader") return;
              for (const s of [...r.send, ...r.sendDurable]) {
                const m = s.msg as { t?: string; entries?: Entry[] };
                if (m.t === "app" && m.entries?.length)
                  appends.push({
                    entries: m.entries.length,
                    bytes: m.entries.reduce((n, e) => n + approxEntryBytes(e), 0),
                  });
              }
            },
          },
          { raft: { heartbeatMs: 50, electionTimeoutMs: 500, suspectAfterMs: 200, maxBatchBytes } },
        ),
    });
    sim.start();
    let leader: RaftSimNode | undefined;
    while (!leader && sim.now() < 2000) {
      sim.runFor(1);
      leader = sim.live().find(([, n]) => n.raft.core.role === "leader")?.[1];
    }
    sim.runFor(300); // the leader's no-op is replicated; only heartbeats (no entries) from here
    appends.length = 0;
    const results: string[] = [];
    for (let i = 0; i < 50; i++)
      leader!.raft.submit({ key: `k${i}`, op: "put", value: `v${i}` }, (e) =>
        results.push(e ? e.message : "ok"),
      );
    sim.runFor(300);
    expect(results).toEqual(Array(50).fill("ok"));
    for (const [, n] of sim.live()) expect(n.kv.values.get("k49")).toBe("v49");
    return appends;
  }

  it("the proposals of one event-loop turn go out together: one AppendEntries per follower, not one per proposal", () => {
    const appends = burst(1024 * 1024);
    expect(appends.map((a) => a.entries)).toEqual([50, 50]);
  });

  it("an append message stays within its byte budget: a backlog goes in several", () => {
    const appends = burst(1000);
    expect(appends.length).toBeGreaterThan(4);
    expect(appends.reduce((n, a) => n + a.entries, 0)).toBe(100);
    for (const a of appends) expect(a.entries === 1 || a.bytes <= 1000).toBe(true);
  });

  it("a certain report of the leader's exit elects a successor within milliseconds; without one it takes the leader's silence", () => {
    for (const detector of [true, false]) {
      const c = cluster(5);
      const [lid] = c.waitLeader(2000);
      c.sim.runFor(200); // heartbeats carry the succession order
      const crashedAt = c.sim.now();
      c.sim.crash(lid);
      if (detector) {
        c.sim.at(crashedAt + 2, "agent: leader exited", () => {
          for (const [, n] of c.sim.live()) n.raft.leaderDown(lid, true);
        });
      }
      const [next] = c.waitLeader(3000);
      const took = c.sim.now() - crashedAt;
      expect(next).not.toBe(lid);
      if (detector)
        expect(took).toBeLessThan(10); // 2 ms report + pre-vote + vote + durable writes
      else expect(took).toBeGreaterThanOrEqual(200); // suspectAfterMs of silence, then a pre-vote
    }
  });

  it("a follower cut off from the leader, suspecting it, does not depose it (route failure is not failover)", () => {
    const c = cluster(5);
    const [lid, l] = c.waitLeader(2000);
    const term = l.raft.core.term;
    const f = c.sim.ids.find((id) => id !== lid)!;
    c.sim.network.partition([[lid], [f]]);
    c.sim.at(c.sim.now() + 100, "f suspects its leader", () => c.sim.node(f)!.raft.leaderDown(lid, false));
    c.sim.runFor(5000);
    expect(c.leader()?.[0]).toBe(lid);
    expect(l.raft.core.term).toBe(term);
    const done = c.put(l, "x", "1");
    c.sim.runFor(100);
    expect(done()).toBe("ok");
  });

  it("a frozen leader that every follower suspects is replaced well before the election timeout", () => {
    const c = cluster(5);
    const [lid] = c.waitLeader(2000);
    c.sim.runFor(200);
    const at = c.sim.now();
    c.sim.pause(lid);
    c.sim.at(at + 100, "everyone suspects the leader", () => {
      for (const [id, n] of c.sim.live()) if (id !== lid) n.raft.leaderDown(lid, false);
    });
    const [next] = c.waitLeader(3000);
    expect(next).not.toBe(lid);
    expect(c.sim.now() - at).toBeLessThan(120);
    // Resumed, the old leader learns the new term and follows.
    c.sim.resume(lid);
    c.sim.runFor(200);
    expect(c.sim.node(lid)!.raft.core.role).toBe("follower");
    expect(c.sim.node(lid)!.raft.core.leader).toBe(next);
  });

  it("a leader cut off with a minority cannot commit or serve reads; the majority elects another", () => {
    const c = cluster(5);
    const [lid, l] = c.waitLeader(2000);
    const others = c.sim.ids.filter((id) => id !== lid);
    c.sim.network.partition([[lid, others[0]!], others.slice(1)]);
    const write = c.put(l, "k", "lost?");
    let read: string | undefined;
    l.raft.readThen((e) => {
      read = e ? e.message : "served";
    });
    c.sim.runFor(3000);
    expect(write()).toBeUndefined();
    expect(read).toMatch(/leadership lost/);
    expect(l.raft.core.role).not.toBe("leader"); // check-quorum stepped it down
    const [next] = c.waitLeader(10);
    expect(others.slice(1)).toContain(next);
  });

  it("membership: removes a voter, then adds it back, one change at a time", () => {
    const c = cluster(5);
    const [lid, l] = c.waitLeader(2000);
    const gone = c.sim.ids.find((id) => id !== lid)!;
    const without = c.sim.ids.filter((id) => id !== gone);
    const r1 = l.raft.core.proposeConfig(c.sim.now(), without);
    expect(() => l.raft.core.proposeConfig(c.sim.now(), c.sim.ids)).toThrow(/still uncommitted/);
    c.sim.runFor(200);
    expect(l.raft.core.commit).toBeGreaterThanOrEqual(r1.index);
    expect([...l.raft.core.voters()].sort()).toEqual(without);
    expect(() => l.raft.core.proposeConfig(c.sim.now(), without.slice(1, 3))).toThrow(/exactly one/);
    // Four voters: quorum 3. Crash two others: no progress.
    l.raft.core.proposeConfig(c.sim.now(), c.sim.ids);
    c.sim.runFor(200);
    expect([...l.raft.core.voters()].sort()).toEqual([...c.sim.ids].sort());
    for (const [, n] of c.sim.live()) expect([...n.raft.core.voters()].sort()).toEqual([...c.sim.ids].sort());
  });

  it("a whole-cluster restart keeps every committed entry and the vote", () => {
    const c = cluster(3);
    const [, l] = c.waitLeader(2000);
    const results = Array.from({ length: 20 }, (_, i) => c.put(l, "k", `v${i}`));
    c.sim.runFor(300);
    expect(results.every((r) => r() === "ok")).toBe(true);
    const before = c.sim.live().map(([id, n]) => [id, n.raft.core.term, n.raft.core.log.lastIndex()]);
    for (const id of c.sim.ids) c.sim.crash(id);
    for (const id of c.sim.ids) c.sim.restart(id);
    for (const [id, term, last] of before) {
      const n = c.sim.node(id as string)!;
      expect(n.raft.core.term).toBe(term);
      expect(n.raft.core.log.lastIndex()).toBeGreaterThanOrEqual(last as number);
    }
    const [, l2] = c.waitLeader(3000);
    c.sim.runFor(300);
    expect(l2.kv.values.get("k")).toBe("v19");
  });

  it("drops malformed and forged Raft messages without changing state", () => {
    const c = cluster(3);
    const [lid, l] = c.waitLeader(2000);
    const term = l.raft.core.term;
    const f = c.sim.ids.find((id) => id !== lid)!;
    const bad: unknown[] = [
      { p: "raft", t: "app", term: term + 5, prevIndex: -1, prevTerm: 0, entries: [], commit: 0 },
      {
        p: "raft",
        t: "app",
        term,
        prevIndex: 0,
        prevTerm: 0,
        entries: [{ index: 3, term, type: "normal" }],
        commit: 0,
      },
      { p: "raft", t: "vote", term: "9", pre: false, lastIndex: 0, lastTerm: 0 },
      { p: "raft", t: "snap", term: term + 1, snapshot: { meta: { index: 1, term: 1, voters: [] } } },
      {
        p: "raft",
        t: "snap",
        term: term + 1,
        meta: { index: 9, term: 1, voters: [lid] },
        offset: 4,
        total: 6,
        chunk: Buffer.alloc(3), // runs past the total
      },
      {
        p: "raft",
        t: "snap",
        term: term + 1,
        meta: { index: 9, term: 1, voters: [lid] },
        offset: 0,
        total: 6,
      },
      { p: "raft", t: "snap-r", term, index: 9, offset: -1 },
      { p: "raft", t: "what" },
    ];
    for (const m of bad) expect(isRaftMessage(m)).toBe(false);
    for (const m of bad) c.sim.transport(f).send(lid, m);
    c.sim.runFor(100);
    expect(l.raft.malformed).toBe(bad.length);
    expect(l.raft.core.term).toBe(term);
    expect(l.raft.core.role).toBe("leader");
  });
});

/** The simulation's leader, once there is one. */
function simLeader(sim: Simulation<RaftSimNode>): RaftSimNode {
  for (;;) {
    const l = sim.live().find(([, n]) => n.raft.core.role === "leader")?.[1];
    if (l) return l;
    sim.runFor(10);
  }
}

/** Step the simulation until `found` names a member (at most 20 s of virtual time). */
function stepUntil(sim: Simulation<RaftSimNode>, found: () => NodeId | undefined): NodeId | undefined {
  let id: NodeId | undefined;
  while (!id && sim.now() < 20_000) {
    expect(sim.step()).toBe(true);
    id = found();
  }
  return id;
}

describe("Raft log compaction", () => {
  it("entries a snapshot covers leave the store a slice per commit; a restart in between skips them", () => {
    const { sim } = cluster(3, {}, 11, 9_000);
    const stale = (id: NodeId) => {
      const snap = sim.store(id).get("raft/snap") as { meta: { index: number } } | undefined;
      const upTo = snap?.meta.index ?? 0;
      return sim
        .store(id)
        .keys("raft/e/")
        .filter((k) => Number(k.slice("raft/e/".length)) <= upTo).length;
    };
    const l = simLeader(sim);
    let done = 0;
    for (let i = 0; i < 9_500; i++)
      l.raft.submit({ key: `k${i % 50}`, op: "put", value: `v${i}` }, () => done++);
    // Step until a member has stored its snapshot, and look at what it left in the store.
    const victim = stepUntil(sim, () => sim.ids.find((id) => sim.store(id).get("raft/snap")));
    expect(victim).toBeDefined();
    if (!victim) return;
    // Members snapshot at phases of their own (staggered): the first covers 4,500 to 9,000 entries.
    const covered = (sim.store(victim).get("raft/snap") as { meta: { index: number } }).meta.index;
    expect(covered).toBeGreaterThanOrEqual(4_500);
    // The snapshot's commit deleted one slice at most (4,096 entries), not all it covers.
    expect(stale(victim)).toBeGreaterThan(covered - 4_096 - 200);
    sim.crash(victim);
    sim.restart(victim);
    sim.runFor(3_000);
    expect(done).toBe(9_500);
    for (const id of sim.ids) expect(stale(id)).toBe(0);
    const leader = sim.live().find(([, n]) => n.raft.core.role === "leader")![1];
    for (const [, n] of sim.live())
      expect(Object.fromEntries(n.kv.values)).toEqual(Object.fromEntries(leader.kv.values));
    expect(sim.node(victim)!.raft.core.log.snapshotIndex).toBeGreaterThanOrEqual(covered);
  });
});

describe("Raft snapshot schedule", () => {
  it("members snapshot at phases of their own, so that a quorum never pauses for one together", () => {
    const { sim } = cluster(3, {}, 5, 300);
    const l = simLeader(sim);
    let done = 0;
    // Each member's first snapshot: the applied index it was of.
    const first = new Map<NodeId, number>();
    const look = () => {
      for (const id of sim.ids) {
        const snap = sim.store(id).get("raft/snap") as { meta: { index: number } } | undefined;
        if (snap && !first.has(id)) first.set(id, snap.meta.index);
      }
    };
    // A steady stream of writes (ten every 5 ms), as clients make: the applied index moves in
    // small steps, not in one jump past every member's phase at once.
    for (let i = 0; i < 1_000; i++) {
      l.raft.submit({ key: `k${i % 20}`, op: "put", value: `v${i}` }, () => done++);
      if (i % 10 === 9) {
        sim.runFor(5);
        look();
      }
    }
    sim.runFor(2_000);
    look();
    const at = [...first.values()].sort((a, b) => a - b);
    expect(at).toHaveLength(3);
    // Phases 0, 100 and 200 of every 300 (each member's place among the voters), the first at
    // least 150 entries in: about 200, 300 and 400 — a third of the interval apart, not together.
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(80);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(80);
    expect(done).toBe(1_000);
  });
});

describe("Raft snapshot storage", () => {
  function chunkedCluster(seed: number) {
    const { sim } = cluster(3, {}, seed, 500);
    /** The generations of snapshot chunks a member's store holds, and the one its record names. */
    const gens = (id: NodeId) => {
      const chunks = new Set(
        sim
          .store(id)
          .keys("raft/s/")
          .map((k) => Number(k.split("/")[2])),
      );
      const rec = sim.store(id).get("raft/snap") as { gen?: number } | undefined;
      return { chunks, record: rec?.gen };
    };
    return { sim, gens };
  }

  it("a crash while a snapshot is stored chunk by chunk: the member restarts from the one before, and the partial chunks go", () => {
    const { sim, gens } = chunkedCluster(12);
    const l = simLeader(sim);
    let done = 0;
    for (let i = 0; i < 1_600; i++)
      l.raft.submit({ key: `k${i % 40}`, op: "put", value: `v${i}` }, () => done++);
    // Step until a member holds chunks of a snapshot its record does not name yet (the second
    // snapshot, so that there is a finished one to come back to).
    const victim = stepUntil(sim, () =>
      sim.ids.find((id) => {
        const g = gens(id);
        return g.record !== undefined && [...g.chunks].some((c) => c > g.record!);
      }),
    );
    expect(victim).toBeDefined();
    if (!victim) return;
    const before = gens(victim).record;
    sim.crash(victim);
    sim.restart(victim);
    expect(sim.node(victim)!.raft.core.log.snapshotIndex).toBeGreaterThan(0);
    sim.runFor(3_000);
    expect(done).toBe(1_600);
    const leader = sim.live().find(([, n]) => n.raft.core.role === "leader")![1];
    for (const [id, n] of sim.live()) {
      expect(Object.fromEntries(n.kv.values)).toEqual(Object.fromEntries(leader.kv.values));
      // Only the recorded snapshot's chunks are left.
      const g = gens(id);
      expect([...g.chunks]).toEqual([g.record]);
    }
    expect(gens(victim).record).not.toBe(before);
  });

  it("a missing chunk stops the member at start with a clear error", () => {
    const { sim } = chunkedCluster(13);
    const l = simLeader(sim);
    for (let i = 0; i < 600; i++) l.raft.submit({ key: `k${i % 40}`, op: "put", value: `v${i}` }, () => {});
    sim.runFor(2_000);
    const id = sim.ids[0]!;
    const store = new SimDurableStore(sim.store(id), "raft/");
    const chunk = sim.store(id).keys("raft/s/")[0]!;
    sim.store(id).delete(chunk);
    expect(() => new RaftStorage(store).load()).toThrow(/snapshot chunk .* is missing.*damaged/);
  });
});

describe("Raft swarm", () => {
  it("500 seeds of random faults (3 and 5 members): safety after every step, linearizable histories", async () => {
    const five = await swarmInChunks(raftScenario, { seeds: 300, nodes: 5, durationMs: 10_000 });
    const three = await swarmInChunks(raftScenario, { seeds: 200, nodes: 3, durationMs: 10_000 });
    expect([...five.failures, ...three.failures]).toEqual([]);
    const sum = (k: string) => (five.stats[k] ?? 0) + (three.stats[k] ?? 0);
    expect(sum("elections")).toBeGreaterThan(1000);
    expect(sum("certainFailovers")).toBeGreaterThan(300);
    expect(sum("crashesInWriteWindow")).toBeGreaterThan(300);
    expect(sum("snapshotsSent")).toBeGreaterThan(500);
    expect(sum("snapshotsInstalled")).toBeGreaterThan(200);
    expect(sum("opsCompleted")).toBeGreaterThan(300_000);
  }, 900_000);
});
