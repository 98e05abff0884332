import { describe, expect, it } from "vitest";
import { CoordMember } from "../../src/coord/member.ts";
import type { WatchEvent } from "../../src/coord/types.ts";
import { SimDurableStore } from "../../src/durable/store.ts";
import type { NodeId } from "../../src/net/transport.ts";
import { Simulation } from "../../src/sim/simulation.ts";

/** Three coordination members on virtual time (microtasks run between 1 ms slices). */
function cluster(seed: number) {
  const sim = new Simulation<CoordMember>({
    seed,
    nodes: 3,
    create: (ctx) =>
      new CoordMember({
        id: ctx.id,
        voters: ctx.nodes,
        transport: ctx.transport,
        clock: ctx.clock,
        rng: ctx.rng,
        store: new SimDurableStore(ctx.store, "coord/"),
        raft: { heartbeatMs: 20, electionTimeoutMs: 150, suspectAfterMs: 80 },
        compactEvery: 50,
      }),
  });
  sim.start();
  const run = async (ms: number) => {
    for (let i = 0; i < ms; i++) {
      sim.runFor(1);
      await Promise.resolve();
      await Promise.resolve();
    }
  };
  const leader = (): [NodeId, CoordMember] | undefined =>
    sim.live().find(([id, m]) => m.raft.core.role === "leader" && sim.state(id) === "up");
  return { sim, run, leader };
}

describe("watches across leader failovers (simulation)", () => {
  it("100 leader crashes: a watch re-established from its last revision + 1 sees every write once, in order", async () => {
    const c = cluster(11);
    await c.run(500);
    const seen: Array<{ rev: number; key: string; value: string }> = [];
    let last = 0;
    let cancel: (() => void) | undefined;
    // (Re)open the watch on a live member that is not the leader, from the last revision seen + 1.
    const rewatch = () => {
      cancel?.();
      const [, m] = c.sim
        .live()
        .find(([id, x]) => x.raft.core.role !== "leader" && c.sim.state(id) === "up")!;
      cancel = m.watch(
        {
          key: "k/",
          end: "k0",
          prevKv: false,
          next: 0,
          send: (rev: number, events: WatchEvent[]) => {
            for (const e of events) seen.push({ rev, key: e.kv.key, value: e.kv.value });
            last = rev;
          },
          compacted: () => {
            throw new Error("watch start revision compacted");
          },
        },
        last + 1,
      );
    };
    rewatch();
    const acked: string[] = [];
    let n = 0;
    for (let round = 0; round < 100; round++) {
      // A few writes through whoever leads now.
      for (let i = 0; i < 5; i++) {
        const l = c.leader();
        if (!l) break;
        const value = `v${++n}`;
        l[1].write({ c: "put", req: { key: `k/${n % 7}`, value } }).then(
          () => acked.push(value),
          () => {},
        );
      }
      await c.run(30);
      const l = c.leader();
      if (!l) {
        await c.run(200);
        continue;
      }
      const [lid] = l;
      c.sim.crash(lid);
      for (const [, m] of c.sim.live()) m.raft.leaderDown(lid, true);
      await c.run(60);
      c.sim.restart(lid);
      rewatch(); // the watching member may have become the leader, or crashed: move the watch
      await c.run(40);
    }
    await c.run(500);
    // Every revision at most once, in order; every acknowledged write seen exactly once.
    const revs = seen.map((s) => s.rev);
    for (let i = 1; i < revs.length; i++) expect(revs[i]).toBeGreaterThan(revs[i - 1]!);
    const values = seen.map((s) => s.value);
    expect(new Set(values).size).toBe(values.length);
    for (const v of acked) expect(values).toContain(v);
    // And what was seen is exactly the store's history.
    const [, any] = c.sim.live()[0]!;
    const history = any.mvcc.eventsSince(1, "k/", "k0", false) as WatchEvent[];
    expect(values).toEqual(history.map((e) => e.kv.value));
    expect(acked.length).toBeGreaterThan(300);
  }, 120_000);

  it("a write that reaches a member while no leader is known waits for the election, then commits", async () => {
    const c = cluster(7);
    await c.run(500);
    const [lid] = c.leader()!;
    c.sim.crash(lid);
    const [, follower] = c.sim.live().find(([id]) => id !== lid && c.sim.state(id) === "up")!;
    for (const [, m] of c.sim.live()) m.raft.leaderDown(lid, true);
    expect(follower.raft.core.liveLeader).toBeUndefined(); // not forwarded to the dead leader
    let outcome: string | undefined;
    follower.write({ c: "put", req: { key: "k/held", value: "v" } }).then(
      (r) => (outcome = `revision ${r.revision}`),
      (e: Error) => (outcome = e.message),
    );
    await c.run(400);
    expect(c.leader()![0]).not.toBe(lid);
    expect(outcome).toMatch(/^revision \d+$/);
    expect(follower.mvcc.range({ key: "k/held" })).toMatchObject({
      ok: true,
      value: { kvs: [{ value: "v" }] },
    });
    // With no election possible (one member of three), it gives up after forwardTimeoutMs.
    for (const [id] of c.sim.live()) if (id !== follower.id) c.sim.crash(id);
    await c.run(400);
    let late: string | undefined;
    follower.write({ c: "put", req: { key: "k/late", value: "v" } }).catch((e: Error) => (late = e.message));
    await c.run(5100);
    expect(late).toBe("etcdserver: no leader");
  });

  it("lease ids the leader picks all have 14 hex digits, as etcd's have a fixed width", async () => {
    const c = cluster(5);
    await c.run(1000);
    const [, m] = c.leader()!;
    const grants = Array.from({ length: 300 }, () => m.leaseGrant(0, 60));
    await c.run(1000); // virtual time for the grants to commit
    const ids = (await Promise.all(grants)).map((g) => g.id);
    expect(new Set(ids).size).toBe(300);
    for (const id of ids) {
      expect(Number.isSafeInteger(id)).toBe(true);
      expect(id.toString(16)).toHaveLength(14);
    }
  });
});
