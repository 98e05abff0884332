import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  approxBytes,
  approxEntryBytes,
  type Entry,
  encodedEntry,
  fromWire,
  isRaftMessage,
  type RaftMessage,
  toWire,
} from "../../src/consensus/messages.ts";
import { RaftCore } from "../../src/consensus/raft-core.ts";
import { RaftLog } from "../../src/consensus/raft-log.ts";
import { RAFT_DEFAULTS, type RaftRestore, type Ready } from "../../src/consensus/raft-types.ts";
import { decode, encode } from "../../src/runtime/codec.ts";
import { createRng } from "../../src/runtime/rng.ts";
import {
  checkLinearizable,
  type Operation,
  type RegisterInput,
  type RegisterOutput,
  registerModel,
} from "../../src/sim/linearizability.ts";

const ids = ["a", "b", "c"];
const core = (id: string, restore?: RaftRestore) =>
  new RaftCore(id, { ...RAFT_DEFAULTS, preVote: false }, createRng(id.charCodeAt(0)), ids, restore, 0);
const msgsTo = (r: Ready, to: string, durable = false) =>
  (durable ? r.sendDurable : r.send).filter((s) => s.to === to).map((s) => s.msg);

describe("RaftCore: what may leave before it is durable", () => {
  it("a candidate's own vote counts only once durable; a crash before that cannot make two leaders in a term", () => {
    const a = core("a");
    const b = core("b");
    const c = core("c");
    const ra = a.tick(10_000);
    expect(a.role).toBe("candidate");
    expect(ra.write?.hard).toEqual({ term: 1, vote: "a" });
    // The vote requests leave at once, in parallel with the write of the term and self-vote.
    const [req] = msgsTo(ra, "b");
    expect(req).toMatchObject({ t: "vote", term: 1, pre: false });
    const rb = b.receive(1, "a", req!);
    // b's grant waits for b's own write.
    expect(msgsTo(rb, "a")).toEqual([]);
    const [grant] = msgsTo(rb, "a", true);
    expect(rb.durableSeq).toBe(rb.write!.seq);
    a.receive(2, "b", grant!);
    expect(a.role).toBe("candidate"); // a majority of two, but its own vote is not on disk yet
    // a crashes now and restarts from what is durable: nothing. c stands in term 1 and a votes for it.
    const a2 = core("a");
    const rc = c.tick(10_000);
    const rq = msgsTo(rc, "a")[0]!;
    expect(rq).toMatchObject({ t: "vote", term: 1 });
    const ra2 = a2.receive(3, "c", rq);
    const g2 = msgsTo(ra2, "c", true)[0]!;
    expect(g2).toMatchObject({ t: "vote-r", granted: true });
    c.durable(4, rc.write!.seq);
    c.receive(5, "a", g2);
    expect(c.role).toBe("leader"); // the only leader of term 1
    // Had a not crashed, its write would have made it leader once durable.
    a.durable(6, ra.write!.seq);
    expect(a.role).toBe("leader");
  });

  it("a split vote after the leader's certain death: the better candidate stands again at once, and the other grants it", () => {
    const a = core("a");
    const b = core("b");
    const c = core("c");
    // a leads term 1, and b and c have heard from it.
    const ra = a.tick(10_000);
    const rvb = b.receive(10_001, "a", msgsTo(ra, "b")[0]!);
    b.durable(10_001, rvb.write!.seq);
    a.durable(10_002, ra.write!.seq);
    const rl = a.receive(10_002, "b", msgsTo(rvb, "a", true)[0]!);
    expect(a.role).toBe("leader");
    b.receive(10_003, "a", msgsTo(rl, "b")[0]!);
    c.receive(10_003, "a", msgsTo(rl, "c")[0]!);
    expect([b.leader, c.leader]).toEqual(["a", "a"]);
    // a dies; both learn it for certain and stand in term 2 at once.
    b.leaderDown(10_010, "a", true);
    c.leaderDown(10_010, "a", true);
    const rb = b.tick(10_100);
    const rc = c.tick(10_100);
    expect([b.role, c.role, b.term, c.term]).toEqual(["candidate", "candidate", 2, 2]);
    // Each gets the other's request for the same term and refuses it (it voted for itself).
    c.receive(10_101, "b", msgsTo(rb, "c")[0]!);
    b.receive(10_101, "c", msgsTo(rc, "b")[0]!);
    // b is the better (equal logs, smaller id) and cannot win without c (a is down): it stands
    // again at once; c waits its retry out.
    expect(b.wakeAt()).toBeLessThanOrEqual(10_101);
    expect(c.wakeAt()).toBeGreaterThan(10_101 + RAFT_DEFAULTS.heartbeatMs / 2);
    const again = b.tick(10_101);
    expect([b.role, b.term]).toEqual(["candidate", 3]);
    const yes = msgsTo(c.receive(10_102, "b", msgsTo(again, "c")[0]!), "b", true)[0]!;
    expect(yes).toMatchObject({ t: "vote-r", term: 3, granted: true });
    b.durable(10_103, again.write!.seq);
    b.receive(10_103, "c", yes);
    expect(b.role).toBe("leader");
  });

  it("five voters: a refused rival that may still win is not disrupted by an early retry", () => {
    const five = ["a", "b", "c", "d", "e"];
    const mk = (id: string) =>
      new RaftCore(id, { ...RAFT_DEFAULTS, preVote: false }, createRng(id.charCodeAt(0)), five, undefined, 0);
    const [b, c, d, a] = [mk("b"), mk("c"), mk("d"), mk("a")];
    const rb = b.tick(10_000);
    const rc = c.tick(10_000);
    b.durable(10_000, rb.write!.seq);
    // d and a vote for c; b refuses c (it voted for itself).
    const dVote = msgsTo(d.receive(10_001, "c", msgsTo(rc, "d")[0]!), "c", true)[0]!;
    const aVote = msgsTo(a.receive(10_001, "c", msgsTo(rc, "a")[0]!), "c", true)[0]!;
    expect([dVote, aVote]).toMatchObject([{ granted: true }, { granted: true }]);
    b.receive(10_001, "c", msgsTo(rc, "b")[0]!);
    // b, a and e could still make three: nothing changes.
    expect(b.wakeAt()).toBeGreaterThan(10_001 + RAFT_DEFAULTS.heartbeatMs / 2);
    const refuse = (x: RaftCore) => msgsTo(x.receive(10_002, "b", msgsTo(rb, x.id)[0]!), "b", true)[0]!;
    b.receive(10_002, "d", refuse(d));
    expect(b.wakeAt()).toBeGreaterThan(10_002 + RAFT_DEFAULTS.heartbeatMs / 2);
    // a refuses too: b cannot win (b and e are two of five), but c can (it has d and a): b waits.
    b.receive(10_003, "a", refuse(a));
    expect(b.role).toBe("candidate");
    expect(b.wakeAt()).toBeGreaterThan(10_003 + RAFT_DEFAULTS.heartbeatMs / 2);
  });

  it("two candidates in one term with no leader known down: no early retry (a third voter may still decide)", () => {
    const b = core("b");
    const c = core("c");
    const rb = b.tick(10_000);
    const rc = c.tick(10_000);
    c.receive(10_001, "b", msgsTo(rb, "c")[0]!);
    b.receive(10_001, "c", msgsTo(rc, "b")[0]!);
    // a has not answered: its vote could still make b leader, so b does not throw its term away.
    expect(b.wakeAt()).toBeGreaterThan(10_001 + RAFT_DEFAULTS.heartbeatMs / 2);
  });

  it("a follower acknowledges appended entries only after they are durable; the leader counts its own log once durable", () => {
    const a = core("a");
    const b = core("b");
    const ra = a.tick(10_000);
    const rb = b.receive(1, "a", msgsTo(ra, "b")[0]!);
    a.durable(2, ra.write!.seq);
    b.durable(2, rb.write!.seq);
    const rl = a.receive(3, "b", msgsTo(rb, "a", true)[0]!);
    expect(a.role).toBe("leader");
    const app = msgsTo(rl, "b").find((m) => m.t === "app") as Extract<RaftMessage, { t: "app" }>;
    expect(app.entries.map((e) => e.type)).toEqual(["noop"]);
    const rf = b.receive(4, "a", app);
    expect(msgsTo(rf, "a")).toEqual([]);
    const ack = msgsTo(rf, "a", true)[0]!;
    expect(ack).toMatchObject({ t: "app-r", ok: true, index: 1 });
    expect(rf.durableSeq).toBe(rf.write!.seq);
    // b's ack alone (plus a's log, not yet durable) does not commit: a's noop write is pending.
    const r1 = a.receive(5, "b", ack);
    expect(a.commit).toBe(0);
    expect(r1.apply).toEqual([]);
    const r2 = a.durable(6, rl.write!.seq);
    expect(a.commit).toBe(1);
    expect(r2.apply.map((e) => e.index)).toEqual([1]);
  });

  it("never truncates a committed entry, and refuses votes for a log that is behind", () => {
    const b = core("b", {
      hard: { term: 2, vote: null },
      entries: [
        { index: 1, term: 1, type: "noop" },
        { index: 2, term: 2, type: "normal", data: 1 },
      ],
    });
    const r = b.receive(0, "c", { p: "raft", t: "vote", term: 3, pre: false, lastIndex: 5, lastTerm: 1 });
    expect(msgsTo(r, "c", true)[0]).toMatchObject({ granted: false });
  });
});

describe("RaftCore: commitment (Raft §5.4.2, the paper's Figure 8)", () => {
  it("a new leader does not commit an older term's entry by counting replicas, only through an entry of its own term", () => {
    const five = ["a", "b", "c", "d", "e"];
    const a = new RaftCore("a", { ...RAFT_DEFAULTS, preVote: false }, createRng(1), five, {
      hard: { term: 3, vote: null },
      entries: [
        { index: 1, term: 1, type: "noop" },
        { index: 2, term: 2, type: "normal", data: "from term 2" },
      ],
    });
    const r = a.tick(10_000);
    for (const v of ["b", "c"])
      a.receive(1, v, { p: "raft", t: "vote-r", term: 4, pre: false, granted: true });
    const r2 = a.durable(2, r.write!.seq);
    expect(a.role).toBe("leader");
    expect(a.log.lastIndex()).toBe(3); // its no-op of term 4
    // b and c acknowledge index 2 (from term 2): a majority holds it with a, but it is not
    // committed — a leader of a later term could still overwrite it.
    for (const v of ["b", "c"])
      a.receive(3, v, { p: "raft", t: "app-r", term: 4, ok: true, index: 2, reject: 0, hint: 0 });
    a.durable(4, r2.write!.seq); // a's own no-op is durable too
    expect(a.commit).toBe(0);
    // Once the no-op of term 4 is on a majority, both commit.
    for (const v of ["b", "c"])
      a.receive(5, v, { p: "raft", t: "app-r", term: 4, ok: true, index: 3, reject: 0, hint: 0 });
    expect(a.commit).toBe(3);
  });
});

describe("RaftLog", () => {
  it("merges appended entries: keeps matching ones, replaces from the first conflict", () => {
    const e = (index: number, term: number): Entry => ({
      index,
      term,
      type: "normal",
      data: `${index}/${term}`,
    });
    const log = new RaftLog(undefined, [e(1, 1), e(2, 1), e(3, 2)]);
    expect(log.merge([e(2, 1), e(3, 2)]).written).toEqual([]);
    const m = log.merge([e(3, 3), e(4, 3)]);
    expect(m.truncatedFrom).toBe(3);
    expect(log.lastIndex()).toBe(4);
    expect(log.term(3)).toBe(3);
    log.compactTo(2, 1);
    expect(log.term(1)).toBeUndefined();
    expect(log.term(2)).toBe(1);
    expect(log.slice(1, 10).map((x) => x.index)).toEqual([3, 4]);
    expect(() => new RaftLog(undefined, [e(1, 1), e(3, 1)])).toThrow(/gap/);
  });
});

type Op = Operation<RegisterInput, RegisterOutput>;

describe("linearizability checker", () => {
  it("accepts any history produced by a real sequential register, however its calls overlap", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            kind: fc.constantFrom("put", "get", "cas"),
            v: fc.integer({ min: 0, max: 3 }),
            pre: fc.integer({ min: 0, max: 5 }),
            post: fc.integer({ min: 0, max: 5 }),
            pending: fc.boolean(),
          }),
          { maxLength: 40 },
        ),
        (steps) => {
          // Each operation takes effect at time 10·i; its call and return straddle that point.
          let value: string | null = null;
          const ops: Op[] = steps.map((s, i) => {
            const t = 10 * i + 5;
            let input: RegisterInput;
            let output: RegisterOutput;
            if (s.kind === "put") {
              input = { key: "k", op: "put", value: `v${s.v}` };
              value = `v${s.v}`;
              output = null;
            } else if (s.kind === "get") {
              input = { key: "k", op: "get" };
              output = value;
            } else {
              input = { key: "k", op: "cas", from: `v${s.v}`, to: `v${(s.v + 1) % 4}` };
              output = value === `v${s.v}`;
              if (output) value = `v${(s.v + 1) % 4}`;
            }
            return {
              call: t - s.pre,
              ret: s.pending && s.kind !== "get" ? undefined : t + s.post,
              input,
              output,
            };
          });
          expect(checkLinearizable(registerModel, ops).ok).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("rejects a stale read and a lost write", () => {
    const put = (v: string, call: number, ret: number): Op => ({
      call,
      ret,
      input: { key: "k", op: "put", value: v },
      output: null,
    });
    const get = (out: string | null, call: number, ret: number): Op => ({
      call,
      ret,
      input: { key: "k", op: "get" },
      output: out,
    });
    expect(checkLinearizable(registerModel, [put("1", 0, 1), put("2", 2, 3), get("1", 4, 5)]).ok).toBe(false);
    expect(checkLinearizable(registerModel, [put("1", 0, 1), get(null, 2, 3)]).ok).toBe(false);
    // Overlapping: either order is fine.
    expect(checkLinearizable(registerModel, [put("1", 0, 10), put("2", 1, 9), get("1", 11, 12)]).ok).toBe(
      true,
    );
    // A write that never returned may or may not have happened.
    const pending: Op = {
      call: 0,
      ret: undefined,
      input: { key: "k", op: "put", value: "p" },
      output: undefined,
    };
    expect(checkLinearizable(registerModel, [pending, get(null, 1, 2), get("p", 3, 4)]).ok).toBe(true);
    expect(checkLinearizable(registerModel, [pending, get("p", 1, 2), get(null, 3, 4)]).ok).toBe(false);
  });
});

describe("RaftCore: snapshots in chunks", () => {
  const meta = { index: 40, term: 2, voters: ids };
  const data = Buffer.from("0123456789abcdefghijklmnopqrstuv"); // 32 bytes, 4 chunks of 8
  const chunk = (offset: number, term = 2): RaftMessage => ({
    p: "raft",
    t: "snap",
    term,
    meta,
    offset,
    total: data.length,
    chunk: data.subarray(offset, offset + 8),
  });
  const replies = (r: Ready) => [...r.send, ...r.sendDurable].map((s) => s.msg);

  it("a follower takes chunks in order, keeps what it holds through duplicates, and installs the whole snapshot", () => {
    const b = core("b");
    expect(replies(b.receive(1, "a", chunk(0)))).toEqual([
      { p: "raft", t: "snap-r", term: 2, index: 40, offset: 8 },
    ]);
    expect(replies(b.receive(2, "a", chunk(8)))).toMatchObject([{ t: "snap-r", offset: 16 }]);
    // A duplicate of the first chunk, late: the follower keeps its 16 bytes and says so.
    expect(replies(b.receive(3, "a", chunk(0)))).toMatchObject([{ t: "snap-r", offset: 16 }]);
    // A chunk from further on (one was lost): where it stands, again.
    expect(replies(b.receive(4, "a", chunk(24)))).toMatchObject([{ t: "snap-r", offset: 16 }]);
    expect(b.receive(5, "a", chunk(16)).applySnapshot).toBeUndefined();
    const done = b.receive(6, "a", chunk(24));
    expect(done.applySnapshot?.meta).toEqual(meta);
    expect(Buffer.from(done.applySnapshot!.data).toString()).toBe(data.toString());
    expect(b.commit).toBe(40);
    expect(replies(done)).toMatchObject([{ t: "app-r", ok: true, index: 40 }]);
  });

  it("a follower with no transfer in hand (it restarted) answers a later chunk with offset 0, so the leader starts over", () => {
    const b = core("b");
    expect(replies(b.receive(1, "a", chunk(16)))).toMatchObject([{ t: "snap-r", index: 40, offset: 0 }]);
  });

  it("chunks of another term's leader do not join a transfer; its first chunk starts a new one", () => {
    const b = core("b");
    b.receive(1, "a", chunk(0, 2));
    b.receive(2, "a", chunk(8, 2));
    expect(replies(b.receive(3, "c", chunk(16, 3)))).toMatchObject([{ t: "snap-r", offset: 0 }]);
    expect(replies(b.receive(4, "c", chunk(0, 3)))).toMatchObject([{ t: "snap-r", offset: 8 }]);
  });
});

describe("approxBytes", () => {
  it("never counts fewer bytes than the codec writes (what keeps every append under the frame limit)", () => {
    fc.assert(
      fc.property(
        fc.anything({
          withMap: true,
          withSet: true,
          withDate: true,
          withNullPrototype: true,
          withSparseArray: true,
          withBoxedValues: false,
          withTypedArray: false,
        }),
        fc.uint8Array({ maxLength: 64 }),
        (v, bytes) => {
          for (const x of [v, { v, bytes }, [bytes, v]])
            expect(approxBytes(x)).toBeGreaterThanOrEqual(encode(x).byteLength);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("counts a plain object that brings its own toJSON by what the codec writes for it", () => {
    const big = "x".repeat(500);
    for (const v of [
      { constructor: 1, toJSON: () => big },
      { toJSON: () => ({ a: big }) },
      { constructor: "c", toJSON: () => [big, big] },
    ])
      expect(approxBytes(v)).toBeGreaterThanOrEqual(encode(v).byteLength);
  });
});

describe("appends on the wire", () => {
  it("carry entries encoded, and come back as the same message", () => {
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue(), { maxLength: 20 }),
        fc.nat({ max: 1e9 }),
        fc.nat(),
        (data, prevIndex, commit) => {
          const entries: Entry[] = data.map((d, i) => ({
            index: prevIndex + 1 + i,
            term: 7,
            type: "normal",
            data: d,
          }));
          const m: RaftMessage = { p: "raft", t: "app", term: 7, prevIndex, prevTerm: 7, entries, commit };
          const back = fromWire(decode(encode(toWire(m)))); // as the transport carries it
          expect(isRaftMessage(back)).toBe(true);
          expect(back).toEqual(decode(encode(m))); // what the message as objects would have been
          // The bytes kept with each entry own their memory: a view would pin a whole frame.
          for (const e of [...entries, ...(back as { entries: Entry[] }).entries])
            expect(encodedEntry(e).buffer.byteLength).toBe(encodedEntry(e).byteLength);
          // What keeps an append under the frame limit still holds with the entries encoded.
          const approx =
            approxBytes({ ...m, entries: [] }) + entries.reduce((n, e) => n + approxEntryBytes(e), 0);
          expect(approx).toBeGreaterThanOrEqual(encode(toWire(m)).byteLength);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("an encoding that is not an entry makes the message malformed; entries as objects still pass", () => {
    const base = { p: "raft", t: "app", term: 1, prevIndex: 0, prevTerm: 0, commit: 0 };
    expect(fromWire({ ...base, entries: [new Uint8Array([0xc1])] })).toBeUndefined(); // not MessagePack
    expect(fromWire({ ...base, entries: [encode({ index: 0, term: 1, type: "normal" })] })).toBeUndefined();
    expect(
      fromWire({ ...base, entries: [encode({ nope: 1 }), { index: 1, term: 1, type: "normal" }] }),
    ).toBeUndefined();
    const old = { ...base, entries: [{ index: 1, term: 1, type: "normal", data: 5 }] };
    expect(isRaftMessage(fromWire(old))).toBe(true);
  });
});
