import { describe, expect, it } from "vitest";
import { FuseCore, type FuseOutput } from "../../src/fuse/fuse-core.ts";
import { parseFuse } from "../../src/fuse/messages.ts";
import { fuseScenario } from "../../src/sim/scenarios/fuse.ts";
import { swarmInChunks } from "../fixtures/swarm.ts";

/** A few FuseCores wired together directly; `drop` loses messages to a node. */
function cluster(ids: string[]) {
  const cores = new Map(ids.map((id) => [id, new FuseCore(id, "b0", { createTimeoutMs: 1000 })]));
  const notified: Array<{ at: string; group: string; reason: unknown }> = [];
  const created: string[] = [];
  const failedCreates: unknown[] = [];
  const drop = new Set<string>();
  const run = (from: string, out: FuseOutput[]) => {
    const queue: Array<[string, FuseOutput]> = out.map((o) => [from, o]);
    while (queue.length > 0) {
      const [src, o] = queue.shift()!;
      if (o.type === "notify") notified.push({ at: src, group: o.group, reason: o.reason });
      else if (o.type === "created") created.push(o.group);
      else if (o.type === "create-failed") failedCreates.push(o.reason);
      else if (!drop.has(o.to) && cores.has(o.to)) {
        const dst = cores.get(o.to)!;
        for (const x of dst.receive(0, src, o.msg)) queue.push([o.to, x]);
      }
    }
  };
  return { cores, notified, created, failedCreates, drop, run };
}

describe("FuseCore", () => {
  it("creates a group at every member; a signal tells every member once, with the signaller's payload", () => {
    const c = cluster(["a", "b", "c"]);
    c.run("a", c.cores.get("a")!.create(0, ["b", "c"], 1));
    expect(c.created).toHaveLength(1);
    const g = c.created[0]!;
    for (const id of ["a", "b", "c"]) expect(c.cores.get(id)!.state(g)).toBe("live");
    const { ok, out } = c.cores.get("b")!.signal(0, g, { why: "done" });
    expect(ok).toBe(true);
    c.run("b", out);
    expect(c.notified.map((n) => n.at).sort()).toEqual(["a", "b", "c"]);
    for (const n of c.notified)
      expect(n.reason).toEqual({ type: "signal", by: "b", payload: { why: "done" } });
    // One-shot: a second signal is refused; a repeated fail tells nobody again.
    expect(c.cores.get("c")!.signal(0, g).ok).toBe(false);
    c.run("a", c.cores.get("a")!.tick(10_000));
    expect(c.notified).toHaveLength(3);
  });

  it("creation fails when a member does not answer, and every member already contacted is told", () => {
    const c = cluster(["a", "b", "c"]);
    c.drop.add("c");
    c.run("a", c.cores.get("a")!.create(0, ["b", "c"], 1));
    expect(c.created).toEqual([]);
    c.run("a", c.cores.get("a")!.tick(1000));
    expect(c.failedCreates).toEqual([
      { type: "create-failed", member: "c", detail: "did not answer in time" },
    ]);
    expect(c.notified.map((n) => n.at)).toEqual(["b"]);
  });

  it("a member's failure fails every group with it; a report about an earlier life of it does not", () => {
    const c = cluster(["a", "b", "c"]);
    c.run("a", c.cores.get("a")!.create(0, ["b"], 1));
    c.run("a", c.cores.get("a")!.create(0, ["c"], 2));
    const [ab, ac] = c.created;
    const reason = { type: "member-failed" as const, member: "b", kind: "process-exit" as const };
    c.run("a", c.cores.get("a")!.memberFailed(0, "b", reason, "an-old-life"));
    expect(c.cores.get("a")!.state(ab!)).toBe("live");
    c.run("a", c.cores.get("a")!.memberFailed(0, "b", reason, "b0"));
    expect(c.cores.get("a")!.state(ab!)).toBe("failed");
    expect(c.cores.get("a")!.state(ac!)).toBe("live");
  });

  it("a late report about a member's earlier life does not stop the current life hearing of failures", () => {
    const c = cluster(["a", "b", "c"]);
    const a = c.cores.get("a")!;
    a.memberBoot(0, "b", "b0");
    c.run("a", a.create(0, ["b", "c"], 1));
    const g = c.created[0]!;
    const reason = { type: "member-failed" as const, member: "b", kind: "process-exit" as const };
    c.drop.add("b");
    c.run("a", a.memberFailed(0, "c", { ...reason, member: "c" }));
    expect(a.state(g)).toBe("failed"); // b has not acknowledged the failure (its messages are lost)
    c.run("a", a.memberFailed(0, "b", reason, "an-old-life")); // stale: b runs as b0
    c.drop.delete("b");
    c.run("a", a.tick(100)); // the failure is still resent to b's current life
    expect(c.notified.map((n) => n.at)).toContain("b");
  });

  it("a restarted member that joined a group before its new life was gossiped hears of the group's signal, with the reason", () => {
    // What `faultline up` showed: n3 SIGKILLed (certain: gone), restarted, and at once in a new
    // group of n2's; n2 signalled it before membership had seen n3's new life, left n3 out of the
    // failure's recipients as gone, and n3 learned of it only as "lost" from the root's list.
    const c = cluster(["a", "b", "c"]);
    const a = c.cores.get("a")!;
    const reason = { type: "member-failed" as const, member: "c", kind: "process-exit" as const };
    for (const id of ["a", "b"]) {
      const core = c.cores.get(id)!;
      core.memberBoot(0, "c", "b0");
      c.run(id, core.memberFailed(0, "c", reason, "b0"));
    }
    c.cores.set("c", new FuseCore("c", "c1", { createTimeoutMs: 1000 })); // its new life
    c.run("a", a.create(0, ["b", "c"], 1));
    const g = c.created[0]!;
    expect(c.cores.get("c")!.state(g)).toBe("live");
    c.run("a", a.signal(0, g).out);
    const told = c.notified
      .filter((n) => n.group === g)
      .map((n) => [n.at, (n.reason as { type: string }).type]);
    expect(told.sort()).toEqual([
      ["a", "signal"],
      ["b", "signal"],
      ["c", "signal"],
    ]);
    // A late report about its old life changes nothing for the new one.
    c.run("a", a.memberFailed(0, "c", reason, "b0"));
    expect(a.state(g)).toBe("failed");
  });

  it("an answer from a life already reported dead does not bring it back", () => {
    const c = cluster(["a", "b", "c"]);
    const a = c.cores.get("a")!;
    const reason = { type: "member-failed" as const, member: "c", kind: "process-exit" as const };
    c.run("a", a.memberFailed(0, "c", reason, "b0")); // c's life b0 died
    c.drop.add("c");
    const out = a.create(0, ["b", "c"], 1);
    const g = (out.find((o) => o.type === "send" && o.to === "c") as { msg: { g: string } }).msg.g;
    c.run("a", out);
    // That life's answer, sent before it died and delayed past the report: c stays gone, so a
    // failure of the group is not sent to it (nor waited for) — it would be retried forever.
    c.run("a", a.receive(0, "c", { p: "fuse", t: "create-ack", g, boot: "b0" }));
    const { out: failing } = a.signal(0, g);
    expect(failing.filter((o) => o.type === "send" && o.to === "c")).toEqual([]);
  });

  it("boot ids have no order: a late answer from an earlier life does not roll a member back", () => {
    const c = cluster(["a", "b", "c"]);
    const a = c.cores.get("a")!;
    a.memberBoot(0, "c", "c2"); // c runs as c2 (an earlier life c1 was never seen here)
    c.drop.add("c");
    const out = a.create(0, ["b", "c"], 1);
    const g = (out.find((o) => o.type === "send" && o.to === "c") as { msg: { g: string } }).msg.g;
    c.run("a", out);
    c.run("a", a.receive(0, "c", { p: "fuse", t: "create-ack", g, boot: "c1" })); // late, from c1
    const reason = { type: "member-failed" as const, member: "c", kind: "process-exit" as const };
    c.run("a", a.memberFailed(0, "c", reason, "c2")); // c2 dies: c is gone, not judged stale
    const { out: failing } = a.signal(0, g);
    expect(failing.filter((o) => o.type === "send" && o.to === "c")).toEqual([]);
  });

  it("a member seen alive as a new life has lost its groups: they fail", () => {
    const c = cluster(["a", "b"]);
    c.run("a", c.cores.get("a")!.create(0, ["b"], 1));
    c.run("a", c.cores.get("a")!.memberBoot(0, "b", "b0"));
    expect(c.notified).toEqual([]);
    c.run("a", c.cores.get("a")!.memberBoot(0, "b", "b1"));
    expect(c.notified[0]).toMatchObject({ at: "a", reason: { type: "member-restarted", member: "b" } });
  });

  it("a lost commit is repaired by the root's retry, not failed; then the digests agree", () => {
    const c = cluster(["a", "b", "c"]);
    const a = c.cores.get("a")!;
    const b = c.cores.get("b")!;
    // Deliver by hand: b and c ack the creation, but the commit to b is lost.
    const deliver = (from: string, out: FuseOutput[], lose?: (to: string, t: string) => boolean) => {
      const next: Array<[string, FuseOutput[]]> = [];
      for (const o of out) {
        if (o.type !== "send" || lose?.(o.to, o.msg.t)) continue;
        next.push([o.to, c.cores.get(o.to)!.receive(0, from, o.msg)]);
      }
      return next;
    };
    let wave = deliver("a", a.create(0, ["b", "c"], 1));
    while (wave.length) {
      const later: Array<[string, FuseOutput[]]> = [];
      for (const [from, out] of wave)
        later.push(...deliver(from, out, (to, t) => to === "b" && t === "commit"));
      wave = later;
    }
    const g = a.activeGroups()[0]!;
    expect(a.state(g)).toBe("live");
    expect(b.state(g)).toBe("pending");
    expect(a.digest("b")).not.toBe(b.digest("a"));
    c.run("a", a.tick(100)); // the root retries the commit
    expect(b.state(g)).toBe("live");
    expect(a.digest("b")).toBe(b.digest("a"));
    expect(c.notified).toEqual([]); // the application was not bothered
  });

  it("a commit for a group this life no longer holds (failed, tombstone expired) fails it instead of reviving it", () => {
    const c = cluster(["a", "b"]);
    c.run("a", c.cores.get("a")!.create(0, ["b"], 1));
    const g = c.created[0]!;
    const b = c.cores.get("b")!;
    c.run("b", b.signal(0, g).out);
    expect(b.state(g)).toBe("failed");
    c.run("b", b.tick(10_000_000)); // every member acknowledged: the tombstone goes
    expect(b.state(g)).toBeUndefined();
    const out = b.receive(10_000_001, "a", {
      p: "fuse",
      t: "commit",
      g,
      members: ["a", "b"],
      boots: { a: "b0", b: "b0" },
    });
    expect(b.state(g)).toBeUndefined();
    expect(out).toContainEqual(
      expect.objectContaining({ type: "send", to: "a", msg: expect.objectContaining({ t: "fail", g }) }),
    );
  });

  it("a member whose fail was lost learns the real reason at the next list exchange, whoever starts it", () => {
    for (const starter of ["a", "c"]) {
      const c = cluster(["a", "b", "c"]);
      c.run("a", c.cores.get("a")!.create(0, ["b", "c"], 1));
      const g = c.created[0]!;
      c.drop.add("c");
      const { out } = c.cores.get("a")!.signal(0, g, { why: "done" });
      c.run("a", out);
      expect(c.notified.map((n) => n.at).sort()).toEqual(["a", "b"]);
      c.drop.delete("c");
      // The digests differ (c still holds the group live): a list exchange, from either side.
      const other = starter === "a" ? "c" : "a";
      c.run(starter, c.cores.get(starter)!.onDigest(1, other, "differs"));
      const atC = c.notified.filter((n) => n.at === "c");
      expect(atC).toHaveLength(1);
      expect(atC[0]!.reason).toEqual({ type: "signal", by: "a", payload: { why: "done" } });
    }
  });

  it("rejects malformed FUSE messages", () => {
    for (const bad of [
      { p: "fuse", t: "create", g: "x", members: "a,b" },
      { p: "fuse", t: "fail", g: "x", reason: { type: "nope" } },
      { p: "fuse", t: "fail", g: "x", reason: { type: "member-failed", member: "a", kind: "meteor" } },
      { p: "fuse", t: "commit", g: "x", members: ["a"], boots: { a: 5 } },
      { p: "fuse", t: "ask", g: "x" },
      { p: "fuse", t: "list", groups: [1], reply: true },
    ])
      expect(parseFuse(bad)).toBeUndefined();
  });
});

describe("FUSE in simulation", () => {
  it("500 seeds of random faults: at most once, every running member told within T, agreement", async () => {
    const { failures, stats } = await swarmInChunks(fuseScenario, {
      seeds: 500,
      nodes: 6,
      durationMs: 90_000,
    });
    expect(failures).toEqual([]);
    expect(stats.groupsCreated).toBeGreaterThan(20_000);
    expect(stats.signals).toBeGreaterThan(1000);
    expect(stats.firedWithMembersUntouchedByFaults).toBe(0);
  }, 600_000);
});
